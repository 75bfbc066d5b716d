//! Resumable training state: model and optimiser (burnpack, parameter ids kept), epoch and
//! history, each written atomically after every epoch.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use super::{EpochLog, RunOptions};
use crate::error::{Error, Result};
use crate::util::{read_file, write_atomic};

/// What a run has done so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Per-epoch logs.
    pub history: Vec<EpochLog>,
    /// Best values of the tracked criteria (name -> value).
    pub best: std::collections::BTreeMap<String, f64>,
    /// The epoch (1-based) each tracked criterion was best at, i.e. of the saved checkpoints.
    #[serde(default)]
    pub best_epoch: std::collections::BTreeMap<String, usize>,
    /// Whether the run finished all its epochs.
    pub finished: bool,
}

fn dir(opts: &RunOptions) -> std::path::PathBuf {
    opts.file(".resume")
}

/// Saves the state after an epoch.
pub fn save<M: Module>(
    opts: &RunOptions,
    model: &M,
    optim: &ModuleOptimizer,
    progress: &Progress,
) -> Result<()> {
    let d = dir(opts);
    let bad = |e: burn::store::RecordError| {
        Error::Invalid(format!("cannot serialise training state: {e}"))
    };
    let model_bytes = model.clone().into_record().into_bytes().map_err(bad)?;
    write_atomic(d.join("model.bpk"), &model_bytes)?;
    let optim_bytes = optim.into_bytes().map_err(bad)?;
    write_atomic(d.join("optim.bpk"), &optim_bytes)?;
    write_atomic(
        d.join("progress.json"),
        &serde_json::to_vec_pretty(progress).expect("progress serialises"),
    )
}

/// The model, an Adam optimiser (PyTorch's epsilon 1e-8) and the progress to train from: the
/// saved state when `run.resume` is set and one exists, else a fresh start.
pub fn start<M: Module>(run: &RunOptions, model: M) -> Result<(M, ModuleOptimizer, Progress)> {
    let optim = burn::optim::AdamConfig::new().with_epsilon(1e-8).init();
    if run.resume
        && let Some((m, o, p)) = load(run, model.clone(), optim.clone())?
    {
        tracing::info!(epochs_done = p.epochs_done, "resuming");
        return Ok((m, o, p));
    }
    Ok((model, optim, Progress::default()))
}

/// Loads the state if there is one: the model, optimiser and progress to continue from.
pub fn load<M: Module>(
    opts: &RunOptions,
    model: M,
    optim: ModuleOptimizer,
) -> Result<Option<(M, ModuleOptimizer, Progress)>> {
    let d = dir(opts);
    let p = d.join("progress.json");
    if !p.exists() {
        return Ok(None);
    }
    let progress: Progress = serde_json::from_slice(&read_file(&p)?)
        .map_err(|e| Error::format(&p, format!("corrupt resume state: {e}")))?;
    let mp = d.join("model.bpk");
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(read_file(&mp)?))
        .map_err(|e| Error::format(&mp, format!("corrupt resume state: {e}")))?;
    let model = model
        .try_load_record(record)
        .map_err(|e| Error::format(&mp, format!("resume state does not fit the model: {e}")))?;
    let op = d.join("optim.bpk");
    let optim = optim
        .from_bytes(Bytes::from_bytes_vec(read_file(&op)?))
        .map_err(|e| Error::format(&op, format!("corrupt optimiser state: {e}")))?;
    Ok(Some((model, optim, progress)))
}
