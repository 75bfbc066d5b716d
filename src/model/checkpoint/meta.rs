//! What a checkpoint says about its model: defed's metadata, or what the tensor and file
//! names of the original authors' files imply.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{Error, Result};
use crate::model::Architecture;
use crate::model::EdgeMethod;

/// What defed records about a model next to its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The network architecture.
    pub architecture: Architecture,
    /// Image channels (1 for MNIST, 3 for SVHN / CIFAR-10).
    pub channels: usize,
    /// Edge detector of a Defed denoiser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeMethod>,
    /// Training noise level sigma of a denoiser, in 1/255 units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<f32>,
    /// Weight of the classification loss a denoiser was trained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
    /// The data set it was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Training and validation figures (accuracy, PSNR, losses, epochs...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Where the weights came from (a training command, or the imported file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The defed version that wrote the file.
    pub defed_version: String,
}

impl CheckpointMeta {
    /// Metadata for a new model of the given architecture.
    pub fn new(architecture: Architecture, channels: usize) -> Self {
        CheckpointMeta {
            architecture,
            channels,
            edge: None,
            noise: None,
            alpha: None,
            dataset: None,
            metrics: BTreeMap::new(),
            source: None,
            defed_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Guesses the architecture and channel count from the tensor names of a file without
/// metadata (the original authors' files).
pub fn infer_architecture(raw: &RawCheckpoint) -> Option<(Architecture, usize)> {
    let t = &raw.tensors;
    let chan = |k: &str| t.get(k).and_then(|x| x.shape.get(1).copied());
    if t.contains_key("en_efe_1.conv.weight") {
        chan("head.0.weight").map(|c| (Architecture::Defed, c))
    } else if t.contains_key("body.0.conv.0.weight") {
        chan("head.0.weight").map(|c| (Architecture::Basenet, c))
    } else if t.contains_key("conv1.weight") && t.contains_key("fc3.weight") {
        chan("conv1.weight").map(|c| (Architecture::Lenet, c))
    } else if t.contains_key("conv2.weight") && t.contains_key("fc2.weight") {
        chan("conv1.weight").map(|c| (Architecture::MadryCnn, c))
    } else if t.contains_key("features.0.weight") && t.contains_key("classifier.weight") {
        chan("features.0.weight").map(|c| (Architecture::SvhnVgg, c))
    } else {
        None
    }
}

/// Reads `key=NUMBER` or `_<short>NUMBER` from a file name (`noise=40`, `_n40`).
pub(super) fn number_in_name(name: &str, long: &str, short: &str) -> Option<f32> {
    let lower = name.to_ascii_lowercase();
    let digits = |s: &str| -> Option<f32> {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        s[..end].trim_end_matches('.').parse().ok()
    };
    if let Some(p) = lower.find(&format!("{long}=")) {
        return digits(&lower[p + long.len() + 1..]);
    }
    for part in lower.split(['_', '-', '.']) {
        if let Some(rest) = part.strip_prefix(short)
            && !rest.is_empty()
            && rest.chars().all(|c| c.is_ascii_digit())
        {
            return rest.parse().ok();
        }
    }
    None
}

/// Options for loading a checkpoint that lacks (or must override) metadata.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The edge method of a Defed file that does not record it.
    pub edge: Option<EdgeMethod>,
    /// The noise level of a denoiser file that does not record it.
    pub noise: Option<f32>,
}

/// Works out the metadata of a checkpoint: its own, or inferred from tensor and file names.
pub fn resolve_meta(
    path: &Path,
    raw: &RawCheckpoint,
    opts: &LoadOptions,
) -> Result<CheckpointMeta> {
    if let Some(meta) = &raw.meta {
        let mut meta = meta.clone();
        if let Some(e) = opts.edge {
            meta.edge = Some(e);
        }
        if let Some(n) = opts.noise {
            meta.noise = Some(n);
        }
        return Ok(meta);
    }
    let (arch, channels) = infer_architecture(raw).ok_or_else(|| {
        let first: Vec<&String> = raw.tensors.keys().take(3).collect();
        Error::checkpoint(
            path,
            format!(
                "not a checkpoint of any architecture defed knows (lenet, madry-cnn, svhn-vgg, defed, basenet): it has no defed metadata and its tensors ({first:?}...) match none of them"
            ),
        )
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut meta = CheckpointMeta::new(arch, channels);
    meta.source = Some(format!("imported from {name}"));
    if arch == Architecture::Defed {
        let lower = name.to_ascii_lowercase();
        let from_name = if lower.contains("sobel") {
            Some(EdgeMethod::Sobel)
        } else if lower.contains("laplacian") {
            Some(EdgeMethod::Laplacian)
        } else {
            None
        };
        meta.edge = Some(opts.edge.or(from_name).ok_or_else(|| {
            Error::checkpoint(
                path,
                "a Defed checkpoint without metadata whose file name names neither 'laplacian' nor 'sobel': say which edge method it was trained with (--edge)",
            )
        })?);
    }
    if !arch.is_classifier() {
        meta.noise = opts.noise.or_else(|| number_in_name(&name, "noise", "n"));
        meta.alpha = number_in_name(&name, "alpha", "a");
    }
    Ok(meta)
}
