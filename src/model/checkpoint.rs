//! Checkpoints: safetensors with defed metadata, and the original authors' files.
//!
//! defed writes the same tensor names and layouts as the original PyTorch code
//! (`en_efe_1.blurConv.0.weight`, `fc1.weight` as `out x in`, ...), so its checkpoints load in
//! PyTorch with `safetensors.torch.load_file` + `load_state_dict`, and the authors' released
//! `.pth` state dicts (and safetensors copies of them) load here unchanged. Metadata (architecture,
//! channels, edge method, noise level, alpha, data set, training metrics, defed version) travels
//! as JSON in the safetensors header under the key `defed`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::filters::EdgeMethod;
use super::{
    Architecture, BaseNet, Classifier, Defed, Denoiser, LeNet, MadryCnn, MadryWidths, SvhnNet,
};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::util::{read_file, write_atomic};

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

fn half_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
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
fn number_in_name(name: &str, long: &str, short: &str) -> Option<f32> {
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

/// Translates a burn module path into the original's PyTorch key.
fn torch_key(path: &[String]) -> String {
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
pub fn apply_tensors<M: Module>(
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
pub fn collect_tensors<M: Module>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut saver = Saver {
        path: Vec::new(),
        types: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut saver);
    saver.out
}

/// Serialises a module and its metadata as safetensors bytes.
pub fn model_bytes<M: Module>(module: &M, meta: &CheckpointMeta) -> Result<Vec<u8>> {
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
    let raw = raw.clone();
    let meta = resolve_meta(path, &raw, &LoadOptions::default())?;
    let model = match meta.architecture {
        Architecture::Lenet => Classifier::Lenet(Box::new(apply_tensors(
            LeNet::new(device),
            &raw,
            path,
            Architecture::Lenet,
        )?)),
        Architecture::MadryCnn => Classifier::Madry(Box::new(apply_tensors(
            MadryCnn::new(meta.channels, madry_widths(path, &raw)?, device),
            &raw,
            path,
            Architecture::MadryCnn,
        )?)),
        Architecture::SvhnVgg => Classifier::SvhnVgg(Box::new(apply_tensors(
            SvhnNet::new(meta.channels, device),
            &raw,
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
pub fn denoiser_from_raw(
    path: &Path,
    raw: &RawCheckpoint,
    device: &Device,
    opts: &LoadOptions,
) -> Result<(Denoiser, CheckpointMeta)> {
    let raw = raw.clone();
    let meta = resolve_meta(path, &raw, opts)?;
    let model = match meta.architecture {
        Architecture::Defed => Denoiser::Defed(Box::new(apply_tensors(
            Defed::new(meta.channels, meta.edge.unwrap_or_default(), device),
            &raw,
            path,
            Architecture::Defed,
        )?)),
        Architecture::Basenet => Denoiser::Basenet(Box::new(apply_tensors(
            BaseNet::new(meta.channels, device),
            &raw,
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
    use super::*;

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
