//! Classifier training: Adam, cross-entropy, best checkpoint by validation accuracy.

use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;

use super::state::{self, Progress};
use super::{ClassifierNet, EpochLog, RunOptions, derive_seed, epoch_bar, write_logs};
use crate::backend::Device;
use crate::data::{Batches, ImageSet};
use crate::error::{Error, Result};
use crate::model::checkpoint::{CheckpointMeta, save_model};
use crate::util::{argmax_rows, one_hot, to_vec};

/// Trains `model` (created on an autodiff `device`) on `train`, validating on `val` after every
/// epoch and keeping the checkpoint with the best validation accuracy in
/// `<out_dir>/<name>.safetensors`.
pub fn train_classifier<M: super::ClassifierNet>(
    model: M,
    train: &ImageSet,
    val: &ImageSet,
    run: &RunOptions,
    device: &Device,
) -> Result<Progress> {
    if train.is_empty() || val.is_empty() {
        return Err(Error::Invalid(
            "training and validation sets must not be empty".into(),
        ));
    }
    let (mut model, mut optim, mut progress) = state::start(run, model)?;
    let plain = device.clone().inner();
    let channels = train.shape[0];
    for epoch in progress.epochs_done..run.epochs {
        let lr = run.lr_at(epoch);
        let bar = epoch_bar(run.progress, train.len(), epoch, run.epochs);
        let (mut loss_sum, mut right, mut seen) = (0f64, 0usize, 0usize);
        let start = std::time::Instant::now();
        for idx in Batches::shuffled(
            train.len(),
            run.batch_size,
            derive_seed(run.seed, epoch as u64, 0),
        ) {
            let b = train.select(&idx);
            let x = b.tensor(0, b.len(), device);
            let logits = model.logits(x);
            let target = one_hot(&b.labels, 10, device);
            let loss = (log_softmax(logits.clone(), 1) * target)
                .sum_dim(1)
                .mean()
                .neg();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            loss_sum += to_vec(loss)[0] as f64 * b.len() as f64;
            let pred = argmax_rows(&to_vec(logits.detach()), 10);
            right += pred.iter().zip(&b.labels).filter(|(p, l)| p == l).count();
            seen += b.len();
            bar.inc(b.len() as u64);
        }
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        let (val_loss, val_acc) = evaluate(&model.valid(), val, run.batch_size, &plain);
        let mut log = EpochLog::new();
        log.insert("epoch".into(), (epoch + 1) as f64);
        log.insert("lr".into(), lr);
        log.insert("train_loss".into(), loss_sum / seen as f64);
        log.insert("train_accuracy".into(), right as f64 / seen as f64);
        log.insert("val_loss".into(), val_loss);
        log.insert("val_accuracy".into(), val_acc);
        log.insert("seconds".into(), secs);
        log.insert("images_per_second".into(), seen as f64 / secs);
        tracing::info!(
            epoch = epoch + 1,
            val_accuracy = val_acc,
            val_loss,
            "epoch done"
        );
        let best = progress.best.get("val_accuracy").copied().unwrap_or(-1.0);
        if val_acc > best {
            progress.best.insert("val_accuracy".into(), val_acc);
            let mut meta = CheckpointMeta::new(model.architecture(), channels);
            meta.dataset = Some(run.dataset.clone());
            meta.source = Some(run.source.clone());
            meta.metrics = log.clone();
            save_model(&model.valid(), &meta, run.file(".safetensors"))?;
        }
        progress.history.push(log);
        progress.epochs_done = epoch + 1;
        progress.finished = progress.epochs_done == run.epochs;
        write_logs(run, &progress.history)?;
        state::save(run, &model, &optim, &progress)?;
    }
    Ok(progress)
}

/// Mean cross-entropy and accuracy of a classifier on a set.
fn evaluate<M: ClassifierNet>(model: &M, set: &ImageSet, bs: usize, device: &Device) -> (f64, f64) {
    let (mut loss, mut right) = (0f64, 0usize);
    for idx in Batches::sequential(set.len(), bs) {
        let b = set.select(&idx);
        let logits = model.logits(b.tensor(0, b.len(), device));
        let target = one_hot(&b.labels, 10, device);
        let l = (log_softmax(logits.clone(), 1) * target)
            .sum_dim(1)
            .sum()
            .neg();
        loss += to_vec(l)[0] as f64;
        let pred = argmax_rows(&to_vec(logits), 10);
        right += pred.iter().zip(&b.labels).filter(|(p, l)| p == l).count();
    }
    (loss / set.len() as f64, right as f64 / set.len() as f64)
}
