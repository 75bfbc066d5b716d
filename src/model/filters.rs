//! The fixed (untrained) image filters of the Defed EFE block, applied per channel.
//!
//! They reproduce kornia 0.5.6 as used by the original: a 3x3 Gaussian blur (sigma 1) and an
//! unnormalised 3x3 Laplacian, both with reflect padding, and the unnormalised Sobel gradient
//! magnitude `sqrt(gx^2 + gy^2 + 1e-6)` with replicate padding. All are differentiable.

use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::backend::filter::{Border, filter3x3};

/// Which edge detector the EFE block's edge branch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EdgeMethod {
    /// The 3x3 Laplacian (ones with centre -8), reflect padding.
    #[default]
    Laplacian,
    /// The Sobel gradient magnitude, replicate padding.
    Sobel,
}

impl EdgeMethod {
    /// The lowercase name used on the command line and in metadata.
    pub fn name(self) -> &'static str {
        match self {
            EdgeMethod::Laplacian => "laplacian",
            EdgeMethod::Sobel => "sobel",
        }
    }
}

impl std::fmt::Display for EdgeMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EdgeMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "laplacian" => Ok(EdgeMethod::Laplacian),
            "sobel" => Ok(EdgeMethod::Sobel),
            other => Err(format!(
                "unknown edge method {other:?} (expected laplacian or sobel)"
            )),
        }
    }
}

/// The normalised 1-D Gaussian taps for sigma 1: `exp(-n^2/2)`, n = -1, 0, 1, summing to 1.
fn gaussian_taps() -> [f32; 3] {
    let side = (-0.5f32).exp();
    let sum = 1.0 + 2.0 * side;
    [side / sum, 1.0 / sum, side / sum]
}

/// Cross-correlates every channel of `x` with the same 3x3 `kernel` (depthwise), after padding
/// the input by one pixel on each side with `pad`.
fn depthwise3x3(x: Tensor<4>, kernel: [f32; 9], pad: PadMode) -> Tensor<4> {
    let border = match pad {
        PadMode::Edge => Border::Replicate,
        _ => Border::Reflect,
    };
    filter3x3(x, kernel, border, |x| depthwise3x3_composed(x, kernel, pad))
}

/// The same filter from burn's pad and grouped convolution (devices without the fused op).
fn depthwise3x3_composed(x: Tensor<4>, kernel: [f32; 9], pad: PadMode) -> Tensor<4> {
    let [_, c, _, _] = x.dims();
    let device = x.device();
    let weights: Vec<f32> = (0..c).flat_map(|_| kernel).collect();
    let weight = Tensor::<4>::from_data(TensorData::new(weights, [c, 1, 3, 3]), &device);
    let padded = x.pad([(1, 1), (1, 1)], pad);
    conv2d(
        padded,
        weight,
        None,
        ConvOptions::new([1, 1], [0, 0], [1, 1], c),
    )
}

/// 3x3 Gaussian blur, sigma 1, reflect padding (kornia `GaussianBlur2d((3,3),(1,1),'reflect')`).
pub fn gaussian_blur(x: Tensor<4>) -> Tensor<4> {
    let g = gaussian_taps();
    let mut k = [0f32; 9];
    for i in 0..3 {
        for j in 0..3 {
            k[i * 3 + j] = g[i] * g[j];
        }
    }
    depthwise3x3(x, k, PadMode::Reflect)
}

/// Unnormalised 3x3 Laplacian (ones, centre -8), reflect padding.
pub fn laplacian(x: Tensor<4>) -> Tensor<4> {
    let mut k = [1f32; 9];
    k[4] = -8.0;
    depthwise3x3(x, k, PadMode::Reflect)
}

/// Unnormalised Sobel gradient magnitude `sqrt(gx^2 + gy^2 + 1e-6)`, replicate padding.
pub fn sobel(x: Tensor<4>) -> Tensor<4> {
    let gx_k = [-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0];
    let gy_k = [-1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0];
    let gx = depthwise3x3(x.clone(), gx_k, PadMode::Edge);
    let gy = depthwise3x3(x, gy_k, PadMode::Edge);
    (gx.clone() * gx + gy.clone() * gy).add_scalar(1e-6).sqrt()
}

/// Applies the given edge detector.
pub fn edge(x: Tensor<4>, method: EdgeMethod) -> Tensor<4> {
    match method {
        EdgeMethod::Laplacian => laplacian(x),
        EdgeMethod::Sobel => sobel(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The fused filter equals burn's pad + grouped convolution, forward and backward.
    #[test]
    fn fused_filters_equal_composition() {
        let device = crate::backend::autodiff_device();
        let mut k = [0f32; 9];
        for (i, v) in k.iter_mut().enumerate() {
            *v = (i as f32 - 3.0) * 0.37;
        }
        let shapes = [[2, 3, 9, 7], [1, 2, 28, 28], [1, 1, 3, 2]];
        for (shape, pad) in shapes
            .into_iter()
            .flat_map(|s| [(s, PadMode::Reflect), (s, PadMode::Edge)])
        {
            let x = Tensor::<4>::random(shape, Distribution::Default, &device).require_grad();
            let probe = Tensor::<4>::random(shape, Distribution::Default, &device);
            assert!(
                crate::backend::flex::on_flex(&x),
                "the fused op must be the one under test"
            );
            let fast = depthwise3x3(x.clone(), k, pad);
            let reference = depthwise3x3_composed(x.clone(), k, pad);
            let diff: f32 = (fast.clone() - reference.clone()).abs().max().into_scalar();
            assert!(diff < 1e-5, "{pad:?} forward {diff}");
            let gf = (fast * probe.clone()).sum().backward();
            let gr = (reference * probe.clone()).sum().backward();
            let diff: f32 = (x.grad(&gf).unwrap() - x.grad(&gr).unwrap())
                .abs()
                .max()
                .into_scalar();
            assert!(diff < 1e-5, "{pad:?} backward {diff}");
        }
    }
}
