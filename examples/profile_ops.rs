//! Times the pieces of a Defed training step at batch 64 (forward + backward per op kind).
//! `cargo run --release --example profile_ops`; `-- raw-pool` times the fused pooling's plane
//! loops alone, `-- matmul` the Madry CNN's 3136 x 1024 layer's three matrix products in
//! burn's and in other layouts, `-- inference` each module of the compiled-in Defed's forward
//! pass (no autodiff) and LeNet's.
use burn::module::Module;
use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
use burn::nn::{BatchNormConfig, PReluConfig};
use burn::tensor::{Distribution, Tensor};
use defed::backend::conv;
use defed::model::filters;
use std::time::Instant;

fn time(name: &str, f: &dyn Fn() -> Tensor<4>) {
    let run = || {
        let y = f();
        let g = y.sum().backward();
        drop(g);
    };
    run();
    let t = Instant::now();
    for _ in 0..5 {
        run();
    }
    let fwd = Instant::now();
    for _ in 0..5 {
        let _ = f().sum().into_scalar::<f32>();
    }
    let f_ms = fwd.elapsed().as_secs_f64() * 200.0;
    let total = (t.elapsed().as_secs_f64() * 1000.0 - f_ms * 5.0) / 5.0;
    println!("{name:28} fwd {f_ms:7.2} ms   fwd+bwd {total:7.2} ms");
}

fn main() {
    if std::env::args().any(|a| a == "raw-pool") {
        return raw_pool();
    }
    if std::env::args().any(|a| a == "matmul") {
        return matmul();
    }
    if std::env::args().any(|a| a == "inference") {
        return inference();
    }
    let d = defed::autodiff_device();
    let x16 = Tensor::<4>::random([64, 16, 28, 28], Distribution::Default, &d).require_grad();
    let x32 = Tensor::<4>::random([64, 32, 14, 14], Distribution::Default, &d).require_grad();
    let c = Conv2dConfig::new([16, 16], [3, 3])
        .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&d);
    time("scale (baseline) 16 28", &|| x16.clone().mul_scalar(2.0));
    time("conv3x3 16 28 fast", &|| conv::conv2d(&c, x16.clone()));
    time("conv3x3 16 28 burn", &|| c.forward(x16.clone()));
    let ct = ConvTranspose2dConfig::new([16, 16], [3, 3])
        .with_padding([1, 1])
        .init(&d);
    time("convT3x3 16 28 fast", &|| {
        conv::conv_transpose2d(&ct, x16.clone())
    });
    let c1 = Conv2dConfig::new([16, 16], [1, 1]).init(&d);
    time("conv1x1 16 28", &|| c1.forward(x16.clone()));
    time("conv1x1 16 28 matmul", &|| conv::conv2d(&c1, x16.clone()));
    let down = Conv2dConfig::new([16, 32], [2, 2])
        .with_stride([2, 2])
        .init(&d);
    time("down 16->32", &|| down.forward(x16.clone()));
    time("down 16->32 matmul", &|| conv::conv2d(&down, x16.clone()));
    let up = ConvTranspose2dConfig::new([32, 16], [2, 2])
        .with_stride([2, 2])
        .init(&d);
    time("up 32->16", &|| up.forward(x32.clone()));
    time("up 32->16 matmul", &|| {
        conv::conv_transpose2d(&up, x32.clone())
    });
    let bn = BatchNormConfig::new(16).init(&d);
    let pr = PReluConfig::new().init(&d);
    time("bn+prelu burn 16 28", &|| {
        pr.forward(bn.forward(x16.clone()))
    });
    time("bn+prelu fused 16 28", &|| {
        defed::backend::batchnorm::batch_norm_prelu(&bn, &pr, x16.clone())
    });
    time("blur 16 28", &|| filters::gaussian_blur(x16.clone()));
    time("laplacian 16 28", &|| filters::laplacian(x16.clone()));
    time("add3 16 28", &|| x16.clone() + x16.clone() + x16.clone());
    time("clamp 16 28", &|| x16.clone().clamp(0.0, 1.0));
    let _ = bn.num_params();

    // The Madry CNN's layers (batch 64): 5x5 convolutions, ReLU + 2x2 max-pooling.
    let x1 = Tensor::<4>::random([64, 1, 28, 28], Distribution::Default, &d).require_grad();
    let m1 = Conv2dConfig::new([1, 32], [5, 5])
        .with_padding(burn::nn::PaddingConfig2d::Explicit(2, 2, 2, 2))
        .init(&d);
    time("conv5x5 1->32 28 fast", &|| conv::conv2d(&m1, x1.clone()));
    let x32b = Tensor::<4>::random([64, 32, 14, 14], Distribution::Default, &d).require_grad();
    let m2 = Conv2dConfig::new([32, 64], [5, 5])
        .with_padding(burn::nn::PaddingConfig2d::Explicit(2, 2, 2, 2))
        .init(&d);
    time("conv5x5 32->64 14 fast", &|| {
        conv::conv2d(&m2, x32b.clone())
    });
    let x32c = Tensor::<4>::random([64, 32, 28, 28], Distribution::Default, &d).require_grad();
    let pool = burn::nn::pool::MaxPool2dConfig::new([2, 2]).init();
    let burn_pool = |x| pool.forward(burn::tensor::activation::relu(x));
    time("relu+maxpool 32 28 burn", &|| burn_pool(x32c.clone()));
    time("relu+maxpool 32 28 fused", &|| {
        defed::backend::pool::relu_max_pool2(x32c.clone(), burn_pool)
    });
}

/// `profile_ops raw-pool`: the fused pooling's plane loops alone, 64x32x28x28.
fn raw_pool() {
    let n = 64 * 32 * 28 * 28;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let g: Vec<f32> = vec![1.0; n / 4];
    let t = Instant::now();
    for _ in 0..20 {
        std::hint::black_box(defed::backend::pool::relu_max_pool2_planes(&x, (28, 28)));
    }
    println!("raw fwd {:.2} ms", t.elapsed().as_secs_f64() * 50.0);
    let t = Instant::now();
    for _ in 0..20 {
        std::hint::black_box(defed::backend::pool::relu_max_pool2_planes_backward(
            &x,
            &g,
            (28, 28),
        ));
    }
    println!("raw bwd {:.2} ms", t.elapsed().as_secs_f64() * 50.0);
}

/// `profile_ops matmul`: the Madry CNN's 3136 x 1024 layer at batch 64: forward, input
/// gradient and weight gradient as burn forms them, and the same products in other layouts.
fn matmul() {
    let d = defed::default_device();
    let x = Tensor::<2>::random([64, 3136], Distribution::Default, &d);
    let w = Tensor::<2>::random([3136, 1024], Distribution::Default, &d);
    let dy = Tensor::<2>::random([64, 1024], Distribution::Default, &d);
    let flops = 2.0 * 64.0 * 3136.0 * 1024.0;
    let run = |name: &str, f: &dyn Fn() -> Tensor<2>| {
        let _ = f().into_data();
        let t = Instant::now();
        for _ in 0..20 {
            let _ = f().into_data();
        }
        let s = t.elapsed().as_secs_f64() / 20.0;
        println!("{name:12} {:.2} ms {:.0} GFLOP/s", s * 1e3, flops / s / 1e9);
    };
    run("fwd x@W", &|| x.clone().matmul(w.clone()));
    run("dx dy@W^T", &|| dy.clone().matmul(w.clone().transpose()));
    run("dw x^T@dy", &|| x.clone().transpose().matmul(dy.clone()));
    run("fwd^T", &|| {
        w.clone()
            .transpose()
            .matmul(x.clone().transpose())
            .transpose()
    });
    run("dx^T W@dy^T", &|| w.clone().matmul(dy.clone().transpose()));
    run("dx^T W@dy^T c", &|| {
        w.clone().matmul(dy.clone().transpose()).transpose()
    });
    let wt = w.clone().transpose().into_data();
    let wt = Tensor::<2>::from_data(wt, &d);
    run("dx dy@Wt", &|| dy.clone().matmul(wt.clone()));
    run("dw^T dy^T@x", &|| dy.clone().transpose().matmul(x.clone()));
}

/// `profile_ops inference`: each module of the compiled-in noise-20 Defed at batch 64 on the
/// plain device, fed the activations the whole forward pass gives it (fastest of 20 calls).
fn inference() {
    use defed::model::Denoiser;
    let d = defed::default_device();
    let den = defed::model::embedded::default_denoisers(&d).expect("compiled in");
    let Denoiser::Defed(m) = &den[0].0 else {
        panic!("the compiled-in denoisers are Defed")
    };
    let (clf, _) = defed::model::embedded::default_classifier(&d).expect("compiled in");
    let x = Tensor::<4>::random([64, 1, 28, 28], Distribution::Default, &d);
    let (_, acts) = m.forward_activations(x.clone());
    let act = |name: &str| {
        acts.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
            .expect("named activation")
    };
    let run = |name: &str, f: &dyn Fn() -> Tensor<4>| {
        let _ = f().into_data();
        let best = (0..20)
            .map(|_| {
                let t = Instant::now();
                let _ = f().into_data();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min);
        println!("{name:12} {best:7.3} ms");
    };
    run("whole", &|| m.forward(x.clone()));
    run("skip1", &|| m.skip1.forward(x.clone()));
    run("head", &|| m.head.forward(x.clone()));
    run("skip2", &|| m.skip2.forward(act("head")));
    run("en_efe_1", &|| m.en_efe_1.forward(act("head")));
    run("down1", &|| m.down1.forward(act("en_efe_1")));
    run("skip3", &|| m.skip3.forward(act("down1")));
    run("en_efe_2", &|| m.en_efe_2.forward(act("down1")));
    run("down2", &|| m.down2.forward(act("en_efe_2")));
    run("up2", &|| m.up2.forward(act("down2")));
    run("de_efe_2", &|| m.de_efe_2.forward(act("up2")));
    run("add s3", &|| act("de_efe_2") + act("skip3"));
    run("up1", &|| m.up1.forward(act("de_efe_2")));
    run("de_efe_1", &|| m.de_efe_1.forward(act("up1")));
    run("tail", &|| m.tail.forward(act("de_efe_1")));
    run("lenet", &|| {
        let y = clf.logits(x.clone());
        let [n, k] = y.dims();
        y.reshape([n, k, 1, 1])
    });
}
