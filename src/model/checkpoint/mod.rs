//! Checkpoints: safetensors with defed metadata, and the original authors' files.
//!
//! defed writes the same tensor names and layouts as the original PyTorch code
//! (`en_efe_1.blurConv.0.weight`, `fc1.weight` as `out x in`, ...), so its checkpoints load in
//! PyTorch with `safetensors.torch.load_file` + `load_state_dict`, and the authors' released
//! `.pth` state dicts (and safetensors copies of them) load here unchanged. Metadata (architecture,
//! channels, edge method, noise level, alpha, data set, training metrics, defed version) travels
//! as JSON in the safetensors header under the key `defed`.

mod meta;
mod read;
mod tensors;

pub use meta::{CheckpointMeta, LoadOptions, infer_architecture, resolve_meta};
pub use read::{FileFormat, RawCheckpoint, RawTensor, read_checkpoint, read_checkpoint_bytes};
pub(crate) use tensors::{apply_tensors, collect_tensors};
pub use tensors::{raw_to_bytes, save_model};

use std::path::Path;

use super::{
    Architecture, BaseNet, Classifier, Defed, Denoiser, LeNet, MadryCnn, MadryWidths, SvhnNet,
};
use crate::backend::Device;
use crate::error::{Error, Result};

/// Loads a classifier checkpoint (defed safetensors, or the authors' `.pth` / safetensors).
///
/// ```
/// let device = defed::default_device();
/// let (clf, meta) = defed::model::load_classifier("models/lenet-mnist.safetensors", &device)?;
/// assert_eq!(clf.input_shape(), [1, 28, 28]);
/// assert_eq!(meta.architecture.name(), "lenet");
/// # Ok::<(), defed::Error>(())
/// ```
pub fn load_classifier(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<(Classifier, CheckpointMeta)> {
    let path = path.as_ref();
    let raw = read_checkpoint(path)?;
    classifier_from_raw(path, &raw, device)
}

/// Builds a classifier from checkpoint content already read.
pub fn classifier_from_raw(
    path: &Path,
    raw: &RawCheckpoint,
    device: &Device,
) -> Result<(Classifier, CheckpointMeta)> {
    let meta = resolve_meta(path, raw, &LoadOptions::default())?;
    let model = match meta.architecture {
        Architecture::Lenet => Classifier::Lenet(Box::new(apply_tensors(
            LeNet::new(device),
            raw,
            path,
            Architecture::Lenet,
        )?)),
        Architecture::MadryCnn => Classifier::Madry(Box::new(apply_tensors(
            MadryCnn::new(meta.channels, madry_widths(path, raw)?, device),
            raw,
            path,
            Architecture::MadryCnn,
        )?)),
        Architecture::SvhnVgg => Classifier::SvhnVgg(Box::new(apply_tensors(
            SvhnNet::new(meta.channels, device),
            raw,
            path,
            Architecture::SvhnVgg,
        )?)),
        other => {
            return Err(Error::checkpoint(
                path,
                format!("is a {other} denoiser, not a classifier"),
            ));
        }
    };
    Ok((model.frozen(), meta))
}

/// The layer widths of a Madry CNN checkpoint, read from its tensor shapes.
fn madry_widths(path: &Path, raw: &RawCheckpoint) -> Result<MadryWidths> {
    let dim = |key: &str| {
        raw.tensors
            .get(key)
            .and_then(|t| t.shape.first().copied())
            .filter(|&d| d > 0)
            .ok_or_else(|| {
                Error::checkpoint(
                    path,
                    format!("does not fit the madry-cnn architecture: no usable tensor {key}"),
                )
            })
    };
    Ok(MadryWidths {
        conv1: dim("conv1.weight")?,
        conv2: dim("conv2.weight")?,
        hidden: dim("fc1.weight")?,
    })
}

/// Loads a denoiser checkpoint (defed safetensors, or the authors' `.pth` / safetensors).
pub fn load_denoiser(
    path: impl AsRef<Path>,
    device: &Device,
    opts: &LoadOptions,
) -> Result<(Denoiser, CheckpointMeta)> {
    let path = path.as_ref();
    let raw = read_checkpoint(path)?;
    denoiser_from_raw(path, &raw, device, opts)
}

/// Builds a denoiser from checkpoint content already read.
pub(crate) fn denoiser_from_raw(
    path: &Path,
    raw: &RawCheckpoint,
    device: &Device,
    opts: &LoadOptions,
) -> Result<(Denoiser, CheckpointMeta)> {
    let meta = resolve_meta(path, raw, opts)?;
    let model = match meta.architecture {
        Architecture::Defed => Denoiser::Defed(Box::new(apply_tensors(
            Defed::new(meta.channels, meta.edge.unwrap_or_default(), device),
            raw,
            path,
            Architecture::Defed,
        )?)),
        Architecture::Basenet => Denoiser::Basenet(Box::new(apply_tensors(
            BaseNet::new(meta.channels, device),
            raw,
            path,
            Architecture::Basenet,
        )?)),
        other => {
            return Err(Error::checkpoint(
                path,
                format!("is a {other} classifier, not a denoiser"),
            ));
        }
    };
    Ok((model.frozen(), meta))
}

#[cfg(test)]
mod tests {
    use super::meta::number_in_name;
    use super::read::half_to_f32;
    use super::tensors::torch_key;

    #[test]
    fn key_translation() {
        let p = |s: &str| s.split('.').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            torch_key(&p("en_efe_1.blur_conv.l1.gamma")),
            "en_efe_1.blurConv.1.weight"
        );
        assert_eq!(torch_key(&p("head.l2.alpha")), "head.2.weight");
        assert_eq!(
            torch_key(&p("body.l15.conv.l1.beta")),
            "body.15.conv.1.bias"
        );
        assert_eq!(
            torch_key(&p("skip1.layers.3.weight")),
            "skip1.layers.3.weight"
        );
        assert_eq!(torch_key(&p("fc1.weight")), "fc1.weight");
    }

    #[test]
    fn names_in_file_names() {
        assert_eq!(
            number_in_name("mnist-laplacian-alpha=1-noise=40.pth", "noise", "n"),
            Some(40.0)
        );
        assert_eq!(
            number_in_name("ern_mnist_laplacian_a1_n120.safetensors", "noise", "n"),
            Some(120.0)
        );
        assert_eq!(
            number_in_name("ern_mnist_laplacian_a1_n120.safetensors", "alpha", "a"),
            Some(1.0)
        );
        assert_eq!(number_in_name("lenet.safetensors", "noise", "n"), None);
    }

    #[test]
    fn half_floats() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0000), 0.0);
        assert!((half_to_f32(0x0001) - 5.96e-8).abs() < 1e-9);
    }
}
