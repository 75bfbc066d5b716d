//! PSNR, SSIM and accuracy, as the original computes them.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

use crate::util::to_vec;

/// Per-image mean squared error between two batches.
pub fn mse_per_image(a: Tensor<4>, b: Tensor<4>) -> Tensor<1> {
    let d = a - b;
    let sq: Tensor<2> = (d.clone() * d).flatten(1, 3);
    sq.mean_dim(1).squeeze_dim(1)
}

/// PSNR of a whole batch, `10 log10(1 / MSE)` with the MSE over every pixel (as the
/// original's test loop).
pub fn psnr(a: Tensor<4>, b: Tensor<4>) -> f32 {
    let d = a - b;
    let mse = to_vec((d.clone() * d).mean())[0];
    10.0 * (1.0 / mse).log10()
}

/// Per-image PSNR.
pub fn psnr_per_image(a: Tensor<4>, b: Tensor<4>) -> Vec<f32> {
    to_vec(mse_per_image(a, b))
        .into_iter()
        .map(|m| 10.0 * (1.0 / m).log10())
        .collect()
}

fn gaussian_window(size: usize, sigma: f32) -> Vec<f32> {
    let c = (size / 2) as f32;
    let g: Vec<f32> = (0..size)
        .map(|x| (-((x as f32 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = g.iter().sum();
    let g: Vec<f32> = g.iter().map(|v| v / s).collect();
    let mut w = Vec::with_capacity(size * size);
    for i in 0..size {
        for j in 0..size {
            w.push(g[i] * g[j]);
        }
    }
    w
}

/// Per-image SSIM with an 11x11 Gaussian window (sigma 1.5), zero padding, C1 = 0.01^2,
/// C2 = 0.03^2, averaged over channels and pixels.
pub fn ssim_per_image(a: Tensor<4>, b: Tensor<4>) -> Vec<f32> {
    let [n, c, _, _] = a.dims();
    let device = a.device();
    let win: Vec<f32> = (0..c).flat_map(|_| gaussian_window(11, 1.5)).collect();
    let w = Tensor::<4>::from_data(TensorData::new(win, [c, 1, 11, 11]), &device);
    let opts = ConvOptions::new([1, 1], [5, 5], [1, 1], c);
    let f = |x: Tensor<4>| conv2d(x, w.clone(), None, opts.clone());
    let mu1 = f(a.clone());
    let mu2 = f(b.clone());
    let mu1_sq = mu1.clone() * mu1.clone();
    let mu2_sq = mu2.clone() * mu2.clone();
    let mu12 = mu1 * mu2;
    let s1 = f(a.clone() * a.clone()) - mu1_sq.clone();
    let s2 = f(b.clone() * b.clone()) - mu2_sq.clone();
    let s12 = f(a * b) - mu12.clone();
    let (c1, c2) = (0.01f32 * 0.01, 0.03f32 * 0.03);
    let num = (mu12.mul_scalar(2.0).add_scalar(c1)) * (s12.mul_scalar(2.0).add_scalar(c2));
    let den = (mu1_sq + mu2_sq).add_scalar(c1) * (s1 + s2).add_scalar(c2);
    let map: Tensor<2> = (num / den).reshape([n as i64, -1]);
    to_vec(map.mean_dim(1))
}

/// Share of predictions equal to the labels.
pub fn accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let right = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    right as f64 / labels.len() as f64
}
