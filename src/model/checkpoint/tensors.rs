//! Between burn modules and PyTorch-named tensors: loading into a module (every name and
//! shape checked), collecting a module's tensors, and writing safetensors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use super::*;
use crate::error::{Error, Result};
use crate::model::Architecture;
use crate::util::write_atomic;

/// Translates a burn module path into the original's PyTorch key.
pub(super) fn torch_key(path: &[String]) -> String {
    let n = path.len();
    path.iter()
        .enumerate()
        .map(|(i, seg)| {
            let last = i + 1 == n;
            match seg.as_str() {
                "blur_conv" => "blurConv".to_string(),
                "edge_conv" => "edgeConv".to_string(),
                "orign_conv" => "orignConv".to_string(),
                "gamma" | "alpha" if last => "weight".to_string(),
                "beta" if last => "bias".to_string(),
                s if s.len() > 1
                    && s.starts_with('l')
                    && s[1..].chars().all(|c| c.is_ascii_digit()) =>
                {
                    s[1..].to_string()
                }
                s => s.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn transpose2(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Puts checkpoint tensors into a module, checking every name and shape.
struct Loader<'a> {
    path: Vec<String>,
    types: Vec<String>,
    tensors: &'a BTreeMap<String, RawTensor>,
    used: BTreeSet<String>,
    error: Option<String>,
}

impl Loader<'_> {
    fn is_linear_weight(&self) -> bool {
        self.types.last().map(String::as_str) == Some("Struct:Linear")
            && self.path.last().map(String::as_str) == Some("weight")
    }
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.types.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.types.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let key = torch_key(&self.path);
        let current = param.val();
        let expected: Vec<usize> = current.dims().to_vec();
        let Some(raw) = self.tensors.get(&key) else {
            self.error = Some(format!(
                "tensor {key} (shape {expected:?}) is missing from the file"
            ));
            return param;
        };
        let (shape, data) = if self.is_linear_weight() && raw.shape.len() == 2 {
            (
                vec![raw.shape[1], raw.shape[0]],
                transpose2(&raw.data, raw.shape[0], raw.shape[1]),
            )
        } else {
            (raw.shape.clone(), raw.data.clone())
        };
        if shape != expected {
            let (file_shape, want) = if self.is_linear_weight() && expected.len() == 2 {
                (raw.shape.clone(), vec![expected[1], expected[0]])
            } else {
                (raw.shape.clone(), expected)
            };
            self.error = Some(format!(
                "tensor {key} has shape {file_shape:?} in the file but the architecture needs {want:?}"
            ));
            return param;
        }
        self.used.insert(key);
        let device = current.device();
        let require_grad = current.is_require_grad();
        param.map(move |_| {
            Tensor::<D>::from_data(TensorData::new(data, shape), &device)
                .set_require_grad(require_grad)
        })
    }
}

/// Loads raw checkpoint tensors into `module`, failing on the first missing or mis-shaped
/// tensor, and on tensors the architecture does not have.
pub(crate) fn apply_tensors<M: Module>(
    module: M,
    raw: &RawCheckpoint,
    path: &Path,
    arch: Architecture,
) -> Result<M> {
    let mut loader = Loader {
        path: Vec::new(),
        types: Vec::new(),
        tensors: &raw.tensors,
        used: BTreeSet::new(),
        error: None,
    };
    let module = module.map(&mut loader);
    if let Some(e) = loader.error {
        return Err(Error::checkpoint(
            path,
            format!("does not fit the {arch} architecture: {e}"),
        ));
    }
    if let Some(extra) = raw.tensors.keys().find(|k| !loader.used.contains(*k)) {
        return Err(Error::checkpoint(
            path,
            format!(
                "does not fit the {arch} architecture: the file has tensor {extra} (shape {:?}) that the architecture does not",
                raw.tensors[extra].shape
            ),
        ));
    }
    Ok(module)
}

/// Collects a module's tensors under their PyTorch keys and layouts.
struct Saver {
    path: Vec<String>,
    types: Vec<String>,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Saver {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.types.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.types.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let dims = t.dims().to_vec();
        let data = crate::util::to_vec(t);
        let is_linear_weight = self.types.last().map(String::as_str) == Some("Struct:Linear")
            && self.path.last().map(String::as_str) == Some("weight");
        let (shape, data) = if is_linear_weight && dims.len() == 2 {
            (vec![dims[1], dims[0]], transpose2(&data, dims[0], dims[1]))
        } else {
            (dims, data)
        };
        self.out.push((torch_key(&self.path), shape, data));
    }
}

/// The named tensors of a module, in PyTorch keys and layouts, in module order.
pub(crate) fn collect_tensors<M: Module>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut saver = Saver {
        path: Vec::new(),
        types: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut saver);
    saver.out
}

/// Serialises a module and its metadata as safetensors bytes.
pub(crate) fn model_bytes<M: Module>(module: &M, meta: &CheckpointMeta) -> Result<Vec<u8>> {
    let tensors = collect_tensors(module);
    serialize(
        tensors
            .iter()
            .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
        meta,
        false,
    )
}

/// Serialises checkpoint content already read (any format) as defed safetensors with `meta`,
/// in float32 or, with `half`, float16 (half the size; values rounded to nearest).
pub fn raw_to_bytes(raw: &RawCheckpoint, meta: &CheckpointMeta, half: bool) -> Result<Vec<u8>> {
    serialize(
        raw.tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape.as_slice(), t.data.as_slice())),
        meta,
        half,
    )
}

/// Named tensors (PyTorch names) and metadata as safetensors bytes, float32 or float16.
fn serialize<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [f32])>,
    meta: &CheckpointMeta,
    half: bool,
) -> Result<Vec<u8>> {
    use safetensors::Dtype;
    use safetensors::tensor::TensorView;
    let mut blobs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape, data) in tensors {
        if name.ends_with(".running_mean") {
            // PyTorch's BatchNorm also has a counter; write it so that a strict
            // `load_state_dict` in PyTorch accepts the file.
            let counter = name.trim_end_matches("running_mean").to_string() + "num_batches_tracked";
            blobs.push((counter, Dtype::I64, vec![], 0i64.to_le_bytes().to_vec()));
        }
        let (dtype, bytes): (Dtype, Vec<u8>) = if half {
            (
                Dtype::F16,
                data.iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            )
        } else {
            (
                Dtype::F32,
                data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        };
        blobs.push((name.to_string(), dtype, shape.to_vec(), bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = blobs
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Invalid(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let mut header = HashMap::new();
    header.insert(
        "defed".to_string(),
        serde_json::to_string(meta).expect("metadata serialises"),
    );
    header.insert("format".to_string(), "pt".to_string());
    safetensors::serialize(views, Some(header))
        .map_err(|e| Error::Invalid(format!("cannot serialise checkpoint: {e}")))
}

/// Saves a module with its metadata as a safetensors checkpoint, atomically.
pub fn save_model<M: Module>(
    module: &M,
    meta: &CheckpointMeta,
    path: impl AsRef<Path>,
) -> Result<()> {
    write_atomic(path, &model_bytes(module, meta)?)
}
