//! A defender saved as one file: every network's tensors (prefixed `classifier.` and
//! `denoisers.<i>.`) in safetensors, with the models' metadata, alpha, thresholds and
//! calibration as JSON under the header key `defed_bundle`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::defender::{Calibration, Defender, DefenderDenoiser, Policy};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::model::checkpoint::{
    FileFormat, RawCheckpoint, RawTensor, classifier_from_raw, collect_tensors, denoiser_from_raw,
    read_checkpoint,
};
use crate::model::{
    Architecture, CheckpointMeta, Classifier, Denoiser, LoadOptions, load_classifier, load_denoiser,
};
use crate::util::write_atomic;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BundleMeta {
    defed_version: String,
    alpha: f32,
    classifier: CheckpointMeta,
    denoisers: Vec<(String, CheckpointMeta)>,
    thresholds: Option<Vec<f32>>,
    calibration: Option<Calibration>,
    #[serde(default)]
    policy: Policy,
}

/// A short display name for a denoiser from its metadata.
pub fn denoiser_name(meta: &CheckpointMeta) -> String {
    let arch = match (meta.architecture, meta.edge) {
        (Architecture::Defed, Some(e)) => format!("defed-{e}"),
        (a, _) => a.to_string(),
    };
    match meta.noise {
        Some(n) => format!("{arch}-n{n}"),
        None => arch,
    }
}

impl DefenderDenoiser {
    /// A denoiser named after its metadata (e.g. `defed-laplacian-n40`).
    pub fn new(net: Denoiser, meta: CheckpointMeta) -> Self {
        DefenderDenoiser {
            name: denoiser_name(&meta),
            net,
            meta,
        }
    }
}

impl Defender {
    /// The embedded default classifier and denoisers, alpha 1, not yet calibrated.
    pub fn embedded(device: &Device) -> Result<Self> {
        let (classifier, _) = crate::model::embedded::default_classifier(device)?;
        let denoisers = crate::model::embedded::default_denoisers(device)?
            .into_iter()
            .map(|(net, meta)| DefenderDenoiser::new(net, meta))
            .collect();
        Defender::new(classifier, denoisers, 1.0)
    }

    /// Builds a defender from checkpoint files (defed's or the original authors').
    pub fn from_checkpoints(
        classifier: &Path,
        denoisers: &[impl AsRef<Path>],
        alpha: f32,
        device: &Device,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let (clf, _) = load_classifier(classifier, device)?;
        let mut list = Vec::new();
        for p in denoisers {
            let (net, meta) = load_denoiser(p.as_ref(), device, opts)?;
            list.push(DefenderDenoiser::new(net, meta));
        }
        Defender::new(clf, list, alpha)
    }

    fn classifier_meta(&self) -> CheckpointMeta {
        CheckpointMeta::new(self.classifier.architecture(), self.input_shape()[0])
    }

    /// Serialises the defender as bundle bytes.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        use safetensors::Dtype;
        use safetensors::tensor::TensorView;
        let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut push = |prefix: &str, tensors: Vec<(String, Vec<usize>, Vec<f32>)>| {
            for (k, s, d) in tensors {
                blobs.push((
                    format!("{prefix}{k}"),
                    s,
                    d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ));
            }
        };
        match &self.classifier {
            Classifier::Lenet(m) => push("classifier.", collect_tensors(m.as_ref())),
            Classifier::Madry(m) => push("classifier.", collect_tensors(m.as_ref())),
            Classifier::SvhnVgg(m) => push("classifier.", collect_tensors(m.as_ref())),
        }
        for (i, d) in self.denoisers.iter().enumerate() {
            let p = format!("denoisers.{i}.");
            match &d.net {
                Denoiser::Defed(m) => push(&p, collect_tensors(m.as_ref())),
                Denoiser::Basenet(m) => push(&p, collect_tensors(m.as_ref())),
            }
        }
        let meta = BundleMeta {
            defed_version: env!("CARGO_PKG_VERSION").into(),
            alpha: self.alpha,
            classifier: self.classifier_meta(),
            denoisers: self
                .denoisers
                .iter()
                .map(|d| (d.name.clone(), d.meta.clone()))
                .collect(),
            thresholds: self.thresholds.clone(),
            calibration: self.calibration.clone(),
            policy: self.policy,
        };
        let views: Vec<(String, TensorView<'_>)> = blobs
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).expect("consistent view"),
                )
            })
            .collect();
        let mut header = HashMap::new();
        header.insert(
            "defed_bundle".to_string(),
            serde_json::to_string(&meta).expect("serialises"),
        );
        safetensors::serialize(views, Some(header))
            .map_err(|e| Error::Invalid(format!("cannot serialise bundle: {e}")))
    }

    /// Saves the defender as a bundle file, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Loads a bundle file.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let raw = read_checkpoint(path)?;
        let json = raw.extra.get("defed_bundle").ok_or_else(|| {
            Error::format(
                path,
                "not a defender bundle (no defed_bundle metadata); create one with `defed bundle`",
            )
        })?;
        let meta: BundleMeta = serde_json::from_str(json)
            .map_err(|e| Error::format(path, format!("corrupt bundle metadata: {e}")))?;
        // Each network's tensors, under its own metadata, go through the ordinary loaders.
        let part = |prefix: &str, m: &CheckpointMeta| RawCheckpoint {
            tensors: raw
                .tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
                .collect::<BTreeMap<String, RawTensor>>(),
            skipped: vec![],
            meta: Some(m.clone()),
            extra: HashMap::new(),
            format: FileFormat::Safetensors,
        };
        let (classifier, _) =
            classifier_from_raw(path, &part("classifier.", &meta.classifier), device)?;
        let mut denoisers = Vec::new();
        for (i, (name, m)) in meta.denoisers.iter().enumerate() {
            let r = part(&format!("denoisers.{i}."), m);
            let (net, _) = denoiser_from_raw(path, &r, device, &LoadOptions::default())?;
            denoisers.push(DefenderDenoiser {
                net,
                meta: m.clone(),
                name: name.clone(),
            });
        }
        let mut d = Defender::new(classifier, denoisers, meta.alpha)?;
        if let Some(t) = &meta.thresholds
            && t.len() != d.denoisers.len()
        {
            return Err(Error::format(
                path,
                "bundle has a threshold count different from its denoiser count",
            ));
        }
        d.thresholds = meta.thresholds;
        d.calibration = meta.calibration;
        d.policy = meta.policy;
        Ok(d)
    }
}
