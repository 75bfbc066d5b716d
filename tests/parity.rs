//! Parity with the original PyTorch Defed: every fixture in `../shared/reference/fixtures`.

mod common;

use common::{assert_close, fixture, shared};
use defed::model::{self, EdgeMethod, LoadOptions, filters};
use defed::util::{tensor4, to_vec};
use defed::{default_device, eval};

const TOL: f32 = 1e-4;

fn input(shared: &std::path::Path, name: &str) -> burn::tensor::Tensor<4> {
    let (s, v) = fixture(shared, name);
    tensor4(v, [s[0], s[1], s[2], s[3]], &default_device())
}

fn ckpt(shared: &std::path::Path, name: &str) -> std::path::PathBuf {
    shared.join("reference/checkpoints").join(name)
}

#[test]
fn fixed_filters_match_kornia() {
    let Some(sh) = shared() else { return };
    for (inp, blur, lap, sob) in [
        (
            "mnist_x.npy",
            "kornia_gaussianblur2d_k3_s1_reflect.npy",
            "kornia_laplacian_k3_reflect_unnorm.npy",
            "kornia_sobel_unnorm.npy",
        ),
        (
            "kornia_rand_in.npy",
            "kornia_rand_blur.npy",
            "kornia_rand_laplacian.npy",
            "kornia_rand_sobel.npy",
        ),
    ] {
        let x = input(&sh, inp);
        assert_close(
            blur,
            &to_vec(filters::gaussian_blur(x.clone())),
            &fixture(&sh, blur).1,
            TOL,
        );
        assert_close(
            lap,
            &to_vec(filters::laplacian(x.clone())),
            &fixture(&sh, lap).1,
            TOL,
        );
        assert_close(sob, &to_vec(filters::sobel(x)), &fixture(&sh, sob).1, TOL);
    }
}

#[test]
fn lenet_logits_from_pth_and_safetensors() {
    let Some(sh) = shared() else { return };
    let dev = default_device();
    let want = fixture(&sh, "lenet_logits.npy").1;
    for f in [
        "pytorch/mnist-classifier.pth",
        "safetensors/mnist_lenet.safetensors",
    ] {
        let (clf, meta) = model::load_classifier(ckpt(&sh, f), &dev).unwrap();
        assert_eq!(meta.architecture, model::Architecture::Lenet);
        let got = to_vec(clf.logits(input(&sh, "mnist_x.npy")));
        assert_close(f, &got, &want, TOL);
    }
}

#[test]
fn svhn_classifier_and_defed() {
    let Some(sh) = shared() else { return };
    let dev = default_device();
    let x = input(&sh, "svhn_x.npy");
    for f in [
        "pytorch/svhn-classifier.pth",
        "safetensors/svhn_classifier.safetensors",
    ] {
        let (clf, _) = model::load_classifier(ckpt(&sh, f), &dev).unwrap();
        assert_close(
            f,
            &to_vec(clf.logits(x.clone())),
            &fixture(&sh, "svhn_logits.npy").1,
            TOL,
        );
    }
    for f in [
        "pytorch/svhn-laplacian-alpha=1-noise=40.pth",
        "safetensors/ern_svhn_laplacian_a1_n40.safetensors",
    ] {
        let (d, meta) = model::load_denoiser(ckpt(&sh, f), &dev, &LoadOptions::default()).unwrap();
        assert_eq!(meta.channels, 3);
        assert_eq!(meta.noise, Some(40.0));
        assert_close(
            f,
            &to_vec(d.forward(x.clone())),
            &fixture(&sh, "ern_svhn_laplacian_n40_out.npy").1,
            TOL,
        );
    }
}

#[test]
fn denoiser_outputs() {
    let Some(sh) = shared() else { return };
    let dev = default_device();
    let x = input(&sh, "mnist_x.npy");
    for (files, out, edge) in [
        (
            [
                "pytorch/mnist-laplacian-alpha=1-noise=40.pth",
                "safetensors/ern_mnist_laplacian_a1_n40.safetensors",
            ],
            "ern_mnist_laplacian_n40_out.npy",
            Some(EdgeMethod::Laplacian),
        ),
        (
            [
                "pytorch/mnist-sobel-alpha=1-noise=40.pth",
                "safetensors/ern_mnist_sobel_a1_n40.safetensors",
            ],
            "ern_mnist_sobel_n40_out.npy",
            Some(EdgeMethod::Sobel),
        ),
        (
            [
                "pytorch/mnist-basenet-alpha=1-noise=40.pth",
                "safetensors/basenet_mnist_a1_n40.safetensors",
            ],
            "basenet_mnist_n40_out.npy",
            None,
        ),
    ] {
        for f in files {
            let (d, meta) =
                model::load_denoiser(ckpt(&sh, f), &dev, &LoadOptions::default()).unwrap();
            assert_eq!(meta.edge, edge, "{f}");
            assert_close(f, &to_vec(d.forward(x.clone())), &fixture(&sh, out).1, TOL);
        }
    }
}

#[test]
fn defed_layer_activations() {
    let Some(sh) = shared() else { return };
    let dev = default_device();
    let (d, _) = model::load_denoiser(
        ckpt(&sh, "pytorch/mnist-laplacian-alpha=1-noise=40.pth"),
        &dev,
        &LoadOptions::default(),
    )
    .unwrap();
    let model::Denoiser::Defed(net) = d else {
        panic!("expected a Defed")
    };
    let x = input(&sh, "mnist_x.npy").narrow(0, 0, 1);
    let (_, acts) = net.forward_activations(x);
    assert_eq!(acts.len(), model::defed::DEFED_ACTIVATIONS.len());
    for (name, t) in acts {
        let f = format!("ern_mnist_laplacian_n40_act_{name}.npy");
        assert_close(&f, &to_vec(t), &fixture(&sh, &f).1, TOL);
    }
}

#[test]
fn adversarial_score_psnr_ssim() {
    let Some(sh) = shared() else { return };
    let dev = default_device();
    let (clf, _) = model::load_classifier(ckpt(&sh, "pytorch/mnist-classifier.pth"), &dev).unwrap();
    let (d, _) = model::load_denoiser(
        ckpt(&sh, "pytorch/mnist-laplacian-alpha=1-noise=40.pth"),
        &dev,
        &LoadOptions::default(),
    )
    .unwrap();
    let x = input(&sh, "mnist_x.npy");
    let s = defed::defense::adversarial_score(&clf, &d, 1.0, x.clone());
    assert_close(
        "adv_score",
        &s.total,
        &fixture(&sh, "adv_score_laplacian_n40.npy").1,
        TOL,
    );
    assert_close(
        "adv_score class",
        &s.class,
        &fixture(&sh, "adv_score_laplacian_n40_class.npy").1,
        TOL,
    );
    assert_close(
        "adv_score vision",
        &s.vision,
        &fixture(&sh, "adv_score_laplacian_n40_vision.npy").1,
        TOL,
    );
    let den = d.try_denoise(x.clone()).unwrap();
    assert_close(
        "denoised clamped",
        &to_vec(den.clone()),
        &fixture(&sh, "ern_mnist_laplacian_n40_denoised_clamped.npy").1,
        TOL,
    );
    let psnr = eval::psnr(x.clone(), den.clone());
    assert_close(
        "psnr batch",
        &[psnr],
        &fixture(&sh, "psnr_batch.npy").1,
        1e-3,
    );
    let per = eval::psnr_per_image(x.clone(), den.clone());
    assert_close(
        "psnr per image",
        &per,
        &fixture(&sh, "psnr_per_image.npy").1,
        1e-3,
    );
    let ssim = eval::ssim_per_image(x, den);
    assert_close(
        "ssim per image",
        &ssim,
        &fixture(&sh, "ssim_per_image.npy").1,
        TOL,
    );
    let mean = ssim.iter().sum::<f32>() / ssim.len() as f32;
    assert_close(
        "ssim batch",
        &[mean],
        &fixture(&sh, "ssim_batch.npy").1,
        TOL,
    );
}

#[test]
fn lenet_scores_9909_on_mnist_test() {
    let Some(sh) = shared() else { return };
    let dev = default_device();
    let test = common::mnist_test(&sh);
    let (clf, _) = model::load_classifier(ckpt(&sh, "pytorch/mnist-classifier.pth"), &dev).unwrap();
    let pred = defed::eval::predict(&clf, &test, 500, &dev).unwrap();
    let right = pred
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| p == l)
        .count();
    assert_eq!(right, 9909, "original LeNet: {right}/10000");
}

#[test]
fn original_denoiser_quality_figures() {
    // The figures for the authors' noise-40 Defed on the first 2,000 test images:
    // 100.0% accuracy and 26.8 dB after denoising; 98.65% and 18.8 dB for the noisy images.
    let Some(sh) = shared() else { return };
    let dev = default_device();
    let test = common::mnist_test(&sh).take(2000);
    let (clf, _) = model::load_classifier(ckpt(&sh, "pytorch/mnist-classifier.pth"), &dev).unwrap();
    let (den, _) = model::load_denoiser(
        ckpt(&sh, "pytorch/mnist-laplacian-alpha=1-noise=40.pth"),
        &dev,
        &LoadOptions::default(),
    )
    .unwrap();
    let q = eval::denoiser_quality(&den, &clf, &test, 40.0, 0, 250, &dev).unwrap();
    eprintln!("{q:?}");
    assert!(q.accuracy >= 0.999, "{}", q.accuracy);
    assert!((q.psnr - 26.8).abs() < 0.15, "{}", q.psnr);
    assert!(
        (q.noisy_accuracy - 0.9865).abs() < 0.004,
        "{}",
        q.noisy_accuracy
    );
    assert!((q.noisy_psnr - 18.8).abs() < 0.1, "{}", q.noisy_psnr);
}
