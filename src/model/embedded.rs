//! The default models compiled into defed, trained by defed itself on the embedded MNIST
//! digits (see `models/README.md` for the commands that made them).

use std::path::Path;

use super::checkpoint::{classifier_from_raw, denoiser_from_raw, read_checkpoint_bytes};
use super::{CheckpointMeta, Classifier, Denoiser, LoadOptions};
use crate::backend::Device;
use crate::error::Result;

static LENET: &[u8] = include_bytes!("../../models/lenet-mnist.safetensors");

/// The default LeNet-5, trained on 9,000 of the embedded digits (seed 0).
pub fn default_classifier(device: &Device) -> Result<(Classifier, CheckpointMeta)> {
    let raw = read_checkpoint_bytes("<embedded lenet-mnist>", LENET)?;
    classifier_from_raw(Path::new("<embedded lenet-mnist>"), &raw, device)
}

static MADRY: &[u8] = include_bytes!("../../models/madry-trades-mnist.safetensors");

/// The robust classifier: the Madry et al. CNN adversarially trained with TRADES at Linf 0.3 on
/// 9,000 of the embedded digits (seed 0), stored as float16.
pub fn robust_classifier(device: &Device) -> Result<(Classifier, CheckpointMeta)> {
    let name = "<embedded madry-trades-mnist>";
    let raw = read_checkpoint_bytes(name, MADRY)?;
    classifier_from_raw(Path::new(name), &raw, device)
}

static ROBUST_DENOISERS: &[(&str, &[u8])] = &[
    (
        "<embedded defed-adv-mnist-n20>",
        include_bytes!("../../models/defed-adv-mnist-n20.safetensors"),
    ),
    (
        "<embedded defed-adv-mnist-n60>",
        include_bytes!("../../models/defed-adv-mnist-n60.safetensors"),
    ),
    (
        "<embedded defed-adv-mnist-n100>",
        include_bytes!("../../models/defed-adv-mnist-n100.safetensors"),
    ),
];

/// The denoisers of the robust defender: the default Defed denoisers (noise 20, 60, 100)
/// fine-tuned against the robust classifier on half-adversarial batches (PGD-10 at Linf 0.3
/// through each denoiser and the classifier).
pub fn robust_denoisers(device: &Device) -> Result<Vec<(Denoiser, CheckpointMeta)>> {
    load_denoisers(ROBUST_DENOISERS, device)
}

static DENOISERS: &[(&str, &[u8])] = &[
    (
        "<embedded defed-mnist-n20>",
        include_bytes!("../../models/defed-mnist-n20.safetensors"),
    ),
    (
        "<embedded defed-mnist-n60>",
        include_bytes!("../../models/defed-mnist-n60.safetensors"),
    ),
    (
        "<embedded defed-mnist-n100>",
        include_bytes!("../../models/defed-mnist-n100.safetensors"),
    ),
];

/// The default Defed denoisers, loaded.
pub fn default_denoisers(device: &Device) -> Result<Vec<(Denoiser, CheckpointMeta)>> {
    load_denoisers(DENOISERS, device)
}

fn load_denoisers(
    files: &[(&str, &[u8])],
    device: &Device,
) -> Result<Vec<(Denoiser, CheckpointMeta)>> {
    files
        .iter()
        .map(|(name, bytes)| {
            let raw = read_checkpoint_bytes(name, bytes)?;
            denoiser_from_raw(Path::new(name), &raw, device, &LoadOptions::default())
        })
        .collect()
}
