//! Evaluation: image-quality metrics and accuracy.

pub mod detection;
pub mod metrics;
pub mod plots;
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
