//! Autodiff gradients through the fixed filters and the denoisers agree with finite
//! differences (training and adaptive attacks depend on them). The networks get a looser
//! tolerance: central differences straddle PReLU and clamp kinks.

use burn::tensor::{Tensor, TensorData};
use defed::model::{BaseNet, Defed, EdgeMethod, filters};
use defed::util::to_vec;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::sync::Mutex;

/// Held while a test seeds burn's (process-wide) initialiser and builds its networks, so tests
/// running in parallel get the same weights every run.
static SEEDED: Mutex<()> = Mutex::new(());

fn check(name: &str, f: &dyn Fn(Tensor<4>) -> Tensor<4>, dims: [usize; 4], tol: f64) {
    check_on(name, f, dims, tol, false)
}

/// `train`: evaluate the finite differences on the autodiff device too, so layers that behave
/// differently in training (batch statistics) are differenced in that mode. Batch statistics
/// couple every pixel of the batch and make the function far more curved, so train mode takes
/// a 10x smaller step (1e-2 there gives 0.2 errors that shrink to 0.03 at 1e-3).
fn check_on(
    name: &str,
    f: &dyn Fn(Tensor<4>) -> Tensor<4>,
    dims: [usize; 4],
    tol: f64,
    train: bool,
) {
    let mut rng = StdRng::seed_from_u64(11);
    let n: usize = dims.iter().product();
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(0.05f32..0.95)).collect();
    let dev = defed::autodiff_device();
    let out_n: usize = {
        let t = Tensor::<4>::from_data(TensorData::new(x.clone(), dims), &dev.clone().inner());
        f(t).dims().iter().product()
    };
    let w: Vec<f32> = (0..out_n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let loss = |xv: &[f32]| -> f64 {
        let on = if train {
            dev.clone()
        } else {
            dev.clone().inner()
        };
        let t = Tensor::<4>::from_data(TensorData::new(xv.to_vec(), dims), &on);
        let y = to_vec(f(t));
        y.iter()
            .zip(&w)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    };
    let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), dims), &dev).require_grad();
    let y = f(xt.clone());
    let wt = Tensor::<4>::from_data(TensorData::new(w.clone(), y.dims()), &dev);
    let g = to_vec(xt.grad(&(y * wt).sum().backward()).unwrap());
    let mut errs = Vec::new();
    for _ in 0..12 {
        let i = rng.random_range(0..n);
        let h = if train { 1e-3f32 } else { 1e-2 };
        let mut p = x.clone();
        p[i] += h;
        let mut m = x.clone();
        m[i] -= h;
        let fd = (loss(&p) - loss(&m)) / (2.0 * h as f64);
        let err = (fd - g[i] as f64).abs() / (1.0 + fd.abs());
        errs.push(err);
    }
    errs.sort_by(f64::total_cmp);
    // A kink within h of a probe spoils that one difference; a wrong gradient spoils most.
    let kinks = if train { 2 } else { 0 };
    let worst = errs[errs.len() - 1 - kinks];
    let shown: Vec<String> = errs.iter().map(|e| format!("{e:.1e}")).collect();
    eprintln!("{name}: relative gradient errors {}", shown.join(" "));
    assert!(worst < tol, "{name}: gradient error {worst}");
}

#[test]
fn filter_gradients() {
    check("blur", &filters::gaussian_blur, [2, 3, 7, 9], 1e-3);
    check("laplacian", &filters::laplacian, [2, 3, 7, 9], 1e-3);
    check("sobel", &filters::sobel, [2, 3, 7, 9], 5e-3);
}

#[test]
fn denoiser_gradients_in_eval_mode() {
    use burn::module::Module;
    let _seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let dev = defed::autodiff_device();
    dev.seed(4);
    let d = Defed::new(1, EdgeMethod::Sobel, &dev).freeze();
    check("defed", &|x| d.forward(x), [1, 1, 8, 8], 2e-2);
    let b = BaseNet::new(1, &dev).freeze();
    check("basenet", &|x| b.forward(x), [1, 1, 8, 8], 2e-2);
}

/// Training differentiates through batch statistics (the fused batch norm + PReLU op).
#[test]
fn denoiser_gradients_in_train_mode() {
    let _seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let dev = defed::autodiff_device();
    dev.seed(5);
    let b = BaseNet::new(1, &dev);
    check_on("basenet-train", &|x| b.forward(x), [4, 1, 8, 8], 3e-2, true);
    let d = Defed::new(1, EdgeMethod::Laplacian, &dev);
    check_on("defed-train", &|x| d.forward(x), [4, 1, 8, 8], 3e-2, true);
}
