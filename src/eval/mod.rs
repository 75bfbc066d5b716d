//! Evaluation: image-quality metrics and accuracy.

pub mod adaptive;
pub mod charts;
pub mod detection;
pub mod figures;
pub mod html;
pub mod merge;
mod metrics;
pub mod report;

pub use metrics::{accuracy, mse_per_image, psnr, psnr_per_image, ssim_per_image};

use crate::backend::Device;
use crate::data::ImageSet;
use crate::error::Result;
use crate::model::Classifier;
use crate::util::{argmax_rows, to_vec};

/// The classifier's predicted class for every image of a set, in batches.
pub fn predict(
    classifier: &Classifier,
    set: &ImageSet,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(set.len());
    let bs = batch_size.max(1);
    let mut start = 0;
    while start < set.len() {
        let end = (start + bs).min(set.len());
        let logits = classifier.try_logits(set.tensor(start, end, device))?;
        out.extend(argmax_rows(&to_vec(logits), classifier.num_classes()));
        start = end;
    }
    Ok(out)
}

/// How well a denoiser restores noisy images, and what the bare noisy images score.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DenoiserQuality {
    /// Images measured.
    pub images: usize,
    /// Noise level sigma (1/255 units).
    pub noise: f32,
    /// Classifier accuracy on the denoised images.
    pub accuracy: f64,
    /// PSNR of denoised vs clean, MSE over all pixels.
    pub psnr: f64,
    /// Mean per-image SSIM of denoised vs clean.
    pub ssim: f64,
    /// Classifier accuracy on the noisy images.
    pub noisy_accuracy: f64,
    /// PSNR of noisy vs clean.
    pub noisy_psnr: f64,
    /// Mean SSIM of noisy vs clean.
    pub noisy_ssim: f64,
}

/// Measures a denoiser on `set` with Gaussian noise of level `noise` (seeded per batch).
pub fn denoiser_quality(
    denoiser: &crate::model::Denoiser,
    classifier: &Classifier,
    set: &ImageSet,
    noise: f32,
    seed: u64,
    batch_size: usize,
    device: &Device,
) -> Result<DenoiserQuality> {
    crate::model::check_denoiser_input(
        [1, set.shape[0], set.shape[1], set.shape[2]],
        denoiser.channels(),
    )?;
    let k = classifier.num_classes();
    let per = set.image_len() as f64;
    let (mut sq, mut sq_n, mut right, mut right_n, mut ss, mut ss_n) =
        (0f64, 0f64, 0, 0, 0f64, 0f64);
    for (b, idx) in crate::data::Batches::sequential(set.len(), batch_size).enumerate() {
        let part = set.select(&idx);
        let x = part.tensor(0, part.len(), device);
        let xn = crate::data::add_gaussian_noise_tensor(
            x.clone(),
            noise,
            crate::util::derive_seed(seed, 7, b as u64),
        );
        let d = denoiser.forward(xn.clone()).clamp(0.0, 1.0);
        for (img, sqv, rv, ssv) in [
            (&d, &mut sq, &mut right, &mut ss),
            (&xn, &mut sq_n, &mut right_n, &mut ss_n),
        ] {
            let diff = x.clone() - img.clone();
            *sqv += to_vec((diff.clone() * diff).sum())[0] as f64;
            let pred = argmax_rows(&to_vec(classifier.try_logits(img.clone())?), k);
            *rv += pred
                .iter()
                .zip(&part.labels)
                .filter(|(p, l)| p == l)
                .count();
            *ssv += metrics::ssim_per_image(x.clone(), img.clone())
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>();
        }
    }
    let n = set.len().max(1) as f64;
    let psnr = |s: f64| 10.0 * (1.0 / (s / (n * per))).log10();
    Ok(DenoiserQuality {
        images: set.len(),
        noise,
        accuracy: right as f64 / n,
        psnr: psnr(sq),
        ssim: ss / n,
        noisy_accuracy: right_n as f64 / n,
        noisy_psnr: psnr(sq_n),
        noisy_ssim: ss_n / n,
    })
}
