//! Training (stages 3 and 4): classifiers, and BaseNet / Defed denoisers.
//!
//! Every run is seeded (batch order and noise draws derive from `seed`, the epoch and the
//! batch), logs each epoch as CSV and JSON next to its checkpoints, and writes a resumable
//! state (model, optimiser, epoch, history) atomically after every epoch.

mod classifier;
mod denoiser;
mod ema;
mod state;

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

pub use classifier::{
    AdversarialConfig, AdversarialMethod, ClassifierTrainConfig, robust_accuracy, train_classifier,
    train_step,
};
pub use denoiser::{DenoiserAdversarial, DenoiserTrainConfig, DetectionSelection, train_denoiser};
pub use ema::Ema;
pub use state::Progress;

use crate::model::{Architecture, BaseNet, Classifier, Defed, Denoiser, LeNet, MadryCnn, SvhnNet};

/// A classifier network that can be trained.
pub trait ClassifierNet: Module + Sized + 'static {
    /// Logits.
    fn logits(&self, x: Tensor<4>) -> Tensor<2>;
    /// Its architecture.
    fn architecture(&self) -> Architecture;
    /// The network as a [`Classifier`] (for attacks against it).
    fn classifier(self) -> Classifier;
}

impl ClassifierNet for LeNet {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
    fn architecture(&self) -> Architecture {
        Architecture::Lenet
    }
    fn classifier(self) -> Classifier {
        Classifier::Lenet(Box::new(self))
    }
}

impl ClassifierNet for MadryCnn {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
    fn architecture(&self) -> Architecture {
        Architecture::MadryCnn
    }
    fn classifier(self) -> Classifier {
        Classifier::Madry(Box::new(self))
    }
}

impl ClassifierNet for SvhnNet {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
    fn architecture(&self) -> Architecture {
        Architecture::SvhnVgg
    }
    fn classifier(self) -> Classifier {
        Classifier::SvhnVgg(Box::new(self))
    }
}

/// A denoiser network that can be trained.
pub trait DenoiserNet: Module + Sized + 'static {
    /// The raw output.
    fn denoise_raw(&self, x: Tensor<4>) -> Tensor<4>;
    /// Its architecture.
    fn architecture(&self) -> Architecture;
    /// The network as a [`Denoiser`] (for attacks through it).
    fn denoiser(self) -> Denoiser;
}

impl DenoiserNet for Defed {
    fn denoise_raw(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
    fn architecture(&self) -> Architecture {
        Architecture::Defed
    }
    fn denoiser(self) -> Denoiser {
        Denoiser::Defed(Box::new(self))
    }
}

impl DenoiserNet for BaseNet {
    fn denoise_raw(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
    fn architecture(&self) -> Architecture {
        Architecture::Basenet
    }
    fn denoiser(self) -> Denoiser {
        Denoiser::Basenet(Box::new(self))
    }
}

/// Options shared by every training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOptions {
    /// Folder for checkpoints, logs and resume state.
    pub out_dir: PathBuf,
    /// Base name of the files written.
    pub name: String,
    /// Epochs to train.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Epochs after which the learning rate is multiplied by 0.1.
    pub milestones: Vec<usize>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Continue from the resume state if there is one.
    pub resume: bool,
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// The command line or description recorded in the checkpoint.
    pub source: String,
    /// Name of the training data set, recorded in the checkpoint.
    pub dataset: String,
}

impl RunOptions {
    /// The learning rate in `epoch` (0-based) after the milestone decays.
    pub(crate) fn lr_at(&self, epoch: usize) -> f64 {
        let decays = self.milestones.iter().filter(|&&m| epoch >= m).count();
        self.lr * 0.1f64.powi(decays as i32)
    }

    /// Path of a file `<name><suffix>` in the output folder.
    pub fn file(&self, suffix: &str) -> PathBuf {
        self.out_dir.join(format!("{}{suffix}", self.name))
    }
}

/// One epoch's figures, as logged.
pub(crate) type EpochLog = std::collections::BTreeMap<String, f64>;

pub use crate::util::derive_seed;

/// Every metric any epoch logged, `epoch` first, the rest by name.
fn log_columns(history: &[EpochLog]) -> Vec<&String> {
    let mut cols: Vec<&String> = Vec::new();
    for h in history {
        for k in h.keys() {
            if !cols.contains(&k) {
                cols.push(k);
            }
        }
    }
    cols.sort_by_key(|c| (*c != "epoch", (*c).clone()));
    cols
}

/// Writes the epoch logs as CSV and JSON, and the training curves as `<name>.svg` and
/// `<name>.png`, atomically.
pub(crate) fn write_logs(opts: &RunOptions, progress: &state::Progress) -> crate::Result<()> {
    let history = &progress.history;
    let cols = log_columns(history);
    let mut csv = cols
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for h in history {
        let row: Vec<String> = cols
            .iter()
            .map(|c| h.get(*c).map(|v| format!("{v}")).unwrap_or_default())
            .collect();
        csv += &(row.join(",") + "\n");
    }
    crate::util::write_atomic(opts.file(".log.csv"), csv.as_bytes())?;
    let json = serde_json::to_vec_pretty(history).expect("logs serialise");
    crate::util::write_atomic(opts.file(".log.json"), &json)?;
    let figure = training_figure(&opts.name, progress);
    if figure.panels.is_empty() {
        return Ok(());
    }
    figure.write(&opts.out_dir)
}

/// The training curves of a run: losses, accuracies and SSIM, and PSNR (when logged), per
/// epoch, with the epochs of the saved checkpoints marked.
pub fn training_figure(name: &str, progress: &state::Progress) -> crate::eval::charts::Figure {
    use crate::eval::charts::{Figure, LineChart, Panel, Series};
    let history = &progress.history;
    let keys = log_columns(history);
    let series = |pick: &dyn Fn(&str) -> bool| -> Vec<Series> {
        keys.iter()
            .filter(|k| pick(k))
            .map(|k| {
                let pts = history
                    .iter()
                    .filter_map(|h| Some((*h.get("epoch")?, *h.get(k.as_str())?)))
                    .collect();
                let s = Series::new(k.as_str(), pts).with_markers();
                if k.starts_with("train") {
                    s.dashed()
                } else {
                    s
                }
            })
            .collect()
    };
    let is_loss = |k: &str| {
        ["loss", "total", "class", "vision", "mse"]
            .iter()
            .any(|p| k.ends_with(p))
    };
    let marks: Vec<(String, f64)> = progress
        .best_epoch
        .iter()
        .map(|(k, &e)| (format!("best {k}"), e as f64))
        .collect();
    let mut panels = Vec::new();
    let loss = &is_loss as &dyn Fn(&str) -> bool;
    let quality: &dyn Fn(&str) -> bool = &|k: &str| k.ends_with("accuracy") || k.ends_with("ssim");
    let psnr: &dyn Fn(&str) -> bool = &|k: &str| k.ends_with("psnr");
    for (title, y, pick) in [
        ("Losses", "loss", loss),
        ("Accuracy and SSIM", "fraction", quality),
        ("PSNR", "dB", psnr),
    ] {
        let s = series(pick);
        if s.is_empty() {
            continue;
        }
        let mut c = LineChart::new(title, "epoch", y, s);
        c.marks = marks.clone();
        panels.push(Panel::Line(c));
    }
    Figure {
        name: name.to_string(),
        caption: format!(
            "Training curves of {name} (dashed: training batches, solid: validation); vertical lines mark the epochs of the saved checkpoints."
        ),
        panels,
    }
}

/// A progress bar for one epoch (hidden when `show` is false).
pub(crate) fn epoch_bar(
    show: bool,
    images: usize,
    epoch: usize,
    epochs: usize,
) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(images as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} img  {per_sec}  eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("epoch {}/{epochs}", epoch + 1));
    bar
}
