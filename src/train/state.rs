//! Resumable training state: model and optimiser (burnpack, parameter ids kept), epoch and
//! history, and the weight average when the run keeps one, written after every epoch as one
//! file (`NAME.resume`) replaced atomically, so a kill at any moment leaves the previous
//! epoch's state or the new one, never a mix.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use super::{Ema, EpochLog, RunOptions};
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

/// The resume state: one file, so that model, optimiser and progress are replaced together.
pub(crate) fn state_file(opts: &RunOptions) -> std::path::PathBuf {
    opts.file(".resume")
}

/// Files of earlier versions: model, optimiser and progress.
const MAGIC_3: &[u8; 8] = b"DEFEDRS1";
/// The same and the weight average: its update count (little-endian u64) and its weights, or
/// nothing when the run keeps none.
const MAGIC: &[u8; 8] = b"DEFEDRS2";

/// The four parts in one buffer: magic, then each part as a little-endian u64 length and its
/// bytes (model, optimiser, progress JSON, weight average).
fn pack(parts: [&[u8]; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + parts.iter().map(|p| p.len() + 8).sum::<usize>());
    out.extend_from_slice(MAGIC);
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn unpack(bytes: &[u8]) -> std::result::Result<[&[u8]; 4], String> {
    let (count, mut rest) = if let Some(rest) = bytes.strip_prefix(MAGIC) {
        (4, rest)
    } else if let Some(rest) = bytes.strip_prefix(MAGIC_3) {
        (3, rest)
    } else {
        return Err("not a defed resume state (bad magic)".into());
    };
    let mut parts = [&[][..]; 4];
    for (i, part) in parts.iter_mut().take(count).enumerate() {
        let (len, tail) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| format!("truncated before part {i}"))?;
        let len = usize::try_from(u64::from_le_bytes(*len))
            .ok()
            .filter(|&l| l <= tail.len())
            .ok_or_else(|| format!("part {i} claims more bytes than the file has (truncated)"))?;
        (*part, rest) = tail.split_at(len);
    }
    if !rest.is_empty() {
        return Err(format!("{} unexpected bytes at the end", rest.len()));
    }
    Ok(parts)
}

/// Saves the state after an epoch, as one file written atomically.
pub fn save<M: Module>(
    opts: &RunOptions,
    model: &M,
    optim: &ModuleOptimizer,
    progress: &Progress,
    average: Option<&Ema<M>>,
) -> Result<()> {
    let bad = |e: burn::store::RecordError| {
        Error::Invalid(format!("cannot serialise training state: {e}"))
    };
    let model_bytes = model.clone().into_record().into_bytes().map_err(bad)?;
    let optim_bytes = optim.into_bytes().map_err(bad)?;
    let progress_bytes = serde_json::to_vec_pretty(progress).expect("progress serialises");
    let mut average_bytes = Vec::new();
    if let Some(a) = average {
        average_bytes.extend_from_slice(&a.updates.to_le_bytes());
        average_bytes.extend_from_slice(&a.model.clone().into_record().into_bytes().map_err(bad)?);
    }
    let path = state_file(opts);
    if path.is_dir() {
        // The layout of earlier versions: a folder of three files, replaced by the one file.
        std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    }
    write_atomic(
        &path,
        &pack([&model_bytes, &optim_bytes, &progress_bytes, &average_bytes]),
    )
}

/// What a run continues from: model, optimiser, progress and, when the run averages its
/// weights, the average.
pub type Start<M> = (M, ModuleOptimizer, Progress, Option<Ema<M>>);

/// The model, an Adam optimiser (PyTorch's epsilon 1e-8), the progress and the weight average
/// (with `average_decay`) to train from: the saved state when `run.resume` is set and one
/// exists, else a fresh start. Temporary files left by an interrupted write are removed first.
pub fn start<M: Module>(
    run: &RunOptions,
    model: M,
    average_decay: Option<f64>,
) -> Result<Start<M>> {
    remove_stale_temporaries(&run.out_dir);
    let optim = burn::optim::AdamConfig::new().with_epsilon(1e-8).init();
    if run.resume
        && let Some(state) = load(run, model.clone(), optim.clone(), average_decay)?
    {
        tracing::info!(epochs_done = state.2.epochs_done, "resuming");
        return Ok(state);
    }
    let average = average_decay.map(|d| Ema::new(&model, d)).transpose()?;
    Ok((model, optim, Progress::default(), average))
}

/// Removes `write_atomic`'s temporary files (`.NAME.tmp-PID`) whose process is gone.
fn remove_stale_temporaries(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some((_, pid)) = name.rsplit_once(".tmp-") else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let alive = pid == std::process::id()
            || (cfg!(target_os = "linux")
                && std::path::Path::new(&format!("/proc/{pid}")).exists());
        if name.starts_with('.') && !alive {
            tracing::info!(file = %e.path().display(), "removing a temporary file left by an interrupted run");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Loads the state if there is one: the model, optimiser, progress and, with
/// `average_decay`, the weight average (a run that did not average before starts its average
/// at the resumed weights), to continue from.
fn load<M: Module>(
    opts: &RunOptions,
    model: M,
    optim: ModuleOptimizer,
    average_decay: Option<f64>,
) -> Result<Option<Start<M>>> {
    let path = state_file(opts);
    let owned;
    let [model_bytes, optim_bytes, progress_bytes, average_bytes]: [&[u8]; 4] = if path.is_dir() {
        // Earlier versions' folder of three files.
        if !path.join("progress.json").exists() {
            return Ok(None);
        }
        owned = [
            read_file(path.join("model.bpk"))?,
            read_file(path.join("optim.bpk"))?,
            read_file(path.join("progress.json"))?,
        ];
        [&owned[0], &owned[1], &owned[2], &[]]
    } else if path.exists() {
        owned = [read_file(&path)?, vec![], vec![]];
        unpack(&owned[0]).map_err(|m| Error::format(&path, format!("corrupt resume state: {m}")))?
    } else {
        return Ok(None);
    };
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        Error::format(&path, format!("corrupt resume state ({what}): {e}"))
    };
    let progress: Progress =
        serde_json::from_slice(progress_bytes).map_err(|e| corrupt("progress", &e))?;
    let restore = |template: M, bytes: &[u8], what: &str| -> Result<M> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
            .map_err(|e| corrupt(what, &e))?;
        template
            .try_load_record(record)
            .map_err(|e| Error::format(&path, format!("resume state does not fit the {what}: {e}")))
    };
    let model = restore(model, model_bytes, "model")?;
    let average = match average_decay {
        None => None,
        Some(decay) if average_bytes.is_empty() => {
            tracing::info!("the saved state has no weight average: starting one now");
            Some(Ema::new(&model, decay)?)
        }
        Some(decay) => {
            let (updates, weights) = average_bytes
                .split_first_chunk::<8>()
                .ok_or_else(|| corrupt("weight average", &"truncated"))?;
            Some(Ema {
                model: restore(model.valid(), weights, "weight average")?,
                decay,
                updates: u64::from_le_bytes(*updates),
            })
        }
    };
    let optim = optim
        .from_bytes(Bytes::from_bytes_vec(optim_bytes.to_vec()))
        .map_err(|e| corrupt("optimiser", &e))?;
    Ok(Some((model, optim, progress, average)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_state_round_trips_and_refuses_damage() {
        let bytes = pack([b"model", b"", b"{}", b"avg"]);
        assert_eq!(unpack(&bytes).unwrap(), [&b"model"[..], b"", b"{}", b"avg"]);
        // An earlier version's three parts read with an empty average.
        let mut old = bytes[..bytes.len() - 11].to_vec();
        old[..8].copy_from_slice(MAGIC_3);
        assert_eq!(unpack(&old).unwrap(), [&b"model"[..], b"", b"{}", b""]);
        for cut in 0..bytes.len() {
            assert!(unpack(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(unpack(&long).unwrap_err().contains("unexpected"));
        let mut huge = bytes.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(unpack(&huge).unwrap_err().contains("claims"));
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".r.resume.tmp-4000000000");
        let mine = dir
            .path()
            .join(format!(".r.resume.tmp-{}", std::process::id()));
        let other = dir.path().join("notes.tmp-1");
        for f in [&dead, &mine, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        remove_stale_temporaries(dir.path());
        assert!(!dead.exists());
        assert!(mine.exists() && other.exists());
    }
}
