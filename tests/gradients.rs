//! Autodiff gradients through the fixed filters and the denoisers agree with finite
//! differences (training and adaptive attacks depend on them). The networks get a looser
//! tolerance: central differences straddle PReLU and clamp kinks.

use burn::tensor::{Tensor, TensorData};
use defed::model::{BaseNet, Defed, EdgeMethod, filters};
use defed::util::to_vec;
use rand::{RngExt, SeedableRng, rngs::StdRng};

fn check(name: &str, f: &dyn Fn(Tensor<4>) -> Tensor<4>, dims: [usize; 4], tol: f64) {
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
        let plain = dev.clone().inner();
        let t = Tensor::<4>::from_data(TensorData::new(xv.to_vec(), dims), &plain);
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
    let mut worst = 0f64;
    for _ in 0..12 {
        let i = rng.random_range(0..n);
        let h = 1e-2f32;
        let mut p = x.clone();
        p[i] += h;
        let mut m = x.clone();
        m[i] -= h;
        let fd = (loss(&p) - loss(&m)) / (2.0 * h as f64);
        let err = (fd - g[i] as f64).abs() / (1.0 + fd.abs());
        worst = worst.max(err);
    }
    eprintln!("{name}: worst relative gradient error {worst:.2e}");
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
    let dev = defed::autodiff_device();
    dev.seed(4);
    let d = Defed::new(1, EdgeMethod::Sobel, &dev).freeze();
    check("defed", &|x| d.forward(x), [1, 1, 8, 8], 2e-2);
    let b = BaseNet::new(1, &dev).freeze();
    check("basenet", &|x| b.forward(x), [1, 1, 8, 8], 2e-2);
}
