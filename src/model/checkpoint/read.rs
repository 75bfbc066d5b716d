//! Reading checkpoint files (safetensors, PyTorch `.pth` zip archives) into float32 tensors,
//! every size checked.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::*;
use crate::error::{Error, Result};
use crate::util::read_file;

/// One tensor read from a checkpoint file, as float32.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Shape in the file.
    pub shape: Vec<usize>,
    /// Elements, C order.
    pub data: Vec<f32>,
}

/// The file formats defed reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// safetensors.
    Safetensors,
    /// A PyTorch `torch.save` pickle (zip or legacy).
    Pytorch,
}

/// The content of a checkpoint file before it is put into a network.
#[derive(Debug, Clone)]
pub struct RawCheckpoint {
    /// Float tensors by their (PyTorch) key.
    pub tensors: BTreeMap<String, RawTensor>,
    /// Keys of non-float tensors that were skipped (`num_batches_tracked`).
    pub skipped: Vec<String>,
    /// defed metadata, when the file has it.
    pub meta: Option<CheckpointMeta>,
    /// Other safetensors header metadata.
    pub extra: HashMap<String, String>,
    /// The file's format.
    pub format: FileFormat,
}

/// Reads a checkpoint file of either format, validating it.
pub fn read_checkpoint(path: impl AsRef<Path>) -> Result<RawCheckpoint> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    // safetensors: an 8-byte header length, then the JSON header. PyTorch: a zip archive
    // ("PK") or a legacy pickle (protocol byte 0x80).
    let safetensors = bytes.len() > 8 && bytes[8] == b'{';
    if !safetensors && (bytes.starts_with(b"PK") || bytes.first() == Some(&0x80)) {
        read_pth(path)
    } else {
        read_safetensors(path, &bytes)
    }
}

/// Reads safetensors checkpoint bytes (`name` is used in messages).
pub fn read_checkpoint_bytes(name: &str, bytes: &[u8]) -> Result<RawCheckpoint> {
    read_safetensors(Path::new(name), bytes)
}

fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<RawCheckpoint> {
    use safetensors::{Dtype, SafeTensors};
    let bad = |e: safetensors::SafeTensorError| {
        Error::format(
            path,
            format!("not a readable safetensors or PyTorch checkpoint: {e}"),
        )
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut tensors = BTreeMap::new();
    let mut skipped = Vec::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ => {
                skipped.push(name);
                continue;
            }
        };
        check_finite(path, &name, &values)?;
        tensors.insert(
            name,
            RawTensor {
                shape: view.shape().to_vec(),
                data: values,
            },
        );
    }
    let mut extra = header.metadata().clone().unwrap_or_default();
    let meta =
        match extra.remove("defed") {
            Some(json) => Some(serde_json::from_str(&json).map_err(|e| {
                Error::format(path, format!("its defed metadata is not valid: {e}"))
            })?),
            None => None,
        };
    Ok(RawCheckpoint {
        tensors,
        skipped,
        meta,
        extra,
        format: FileFormat::Safetensors,
    })
}

fn read_pth(path: &Path) -> Result<RawCheckpoint> {
    use burn::store::pytorch_reader::{DType, PytorchReader};
    let reader = PytorchReader::new(path)
        .or_else(|_| PytorchReader::with_top_level_key(path, "state_dict"))
        .map_err(|e| {
            Error::format(
                path,
                format!("not a readable PyTorch state_dict checkpoint: {e}"),
            )
        })?;
    let mut tensors = BTreeMap::new();
    let mut skipped = Vec::new();
    for (name, t) in reader.tensors() {
        let bytes = t
            .read()
            .map_err(|e| Error::format(path, format!("tensor {name}: {e}")))?;
        let values: Vec<f32> = match t.dtype() {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ => {
                skipped.push(name.clone());
                continue;
            }
        };
        if values.len() != t.num_elements() {
            return Err(Error::format(
                path,
                format!(
                    "tensor {name} is truncated: {} of {} values",
                    values.len(),
                    t.num_elements()
                ),
            ));
        }
        check_finite(path, name, &values)?;
        tensors.insert(
            name.clone(),
            RawTensor {
                shape: t.shape().to_vec(),
                data: values,
            },
        );
    }
    if tensors.is_empty() {
        return Err(Error::format(
            path,
            "the PyTorch file holds no float tensors",
        ));
    }
    Ok(RawCheckpoint {
        tensors,
        skipped,
        meta: None,
        extra: HashMap::new(),
        format: FileFormat::Pytorch,
    })
}

fn check_finite(path: &Path, name: &str, values: &[f32]) -> Result<()> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(
            path,
            format!(
                "tensor {name} holds a non-finite value ({}) at element {i}",
                values[i]
            ),
        ));
    }
    Ok(())
}

pub(super) fn half_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}
