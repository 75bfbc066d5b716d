//! Classifier training: Adam and cross-entropy, optionally against an adversary (PGD
//! adversarial training after Madry et al., or TRADES after Zhang et al.), with the best
//! checkpoint chosen on the validation split (robust accuracy when training adversarially).

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::state::{self, Progress};
use super::{ClassifierNet, EpochLog, RunOptions, derive_seed, epoch_bar, write_logs};
use crate::attack::{AttackModel, LossKind, Norm, Pgd, gather_images};
use crate::backend::Device;
use crate::data::{Augment, Batches, ImageSet};
use crate::error::{Error, Result};
use crate::model::CLASSES;
use crate::model::checkpoint::{CheckpointMeta, save_model};
use crate::util::{argmax_rows, cross_entropy_rows, one_hot, tensor4, to_vec};

/// The training objective against an adversary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdversarialMethod {
    /// Madry et al.: cross-entropy on PGD examples crafted against the current model.
    Pgd,
    /// TRADES: clean cross-entropy + beta x KL(clean || adversarial), the adversarial example
    /// maximising that KL.
    Trades,
}

impl std::str::FromStr for AdversarialMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "pgd" | "madry" => Ok(AdversarialMethod::Pgd),
            "trades" => Ok(AdversarialMethod::Trades),
            other => Err(format!(
                "unknown adversarial training {other:?} (pgd or trades)"
            )),
        }
    }
}

/// Adversarial training settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdversarialConfig {
    /// PGD (Madry) or TRADES.
    pub method: AdversarialMethod,
    /// Norm of the threat model (L2 or Linf).
    pub norm: Norm,
    /// Budget.
    pub eps: f32,
    /// PGD steps per training batch.
    pub steps: usize,
    /// PGD step size at the full budget (scaled with the budget during the ramp).
    pub step_size: f32,
    /// Epochs over which the budget grows linearly from 0 to `eps` (0: full from the start).
    pub ramp_epochs: f64,
    /// TRADES' weight of the KL term.
    pub beta: f32,
    /// Validation images attacked after every epoch (the first ones of the split).
    pub val_images: usize,
    /// PGD steps of that validation attack.
    pub val_steps: usize,
    /// Keep the checkpoint with the best clean validation accuracy among the epochs whose
    /// robust validation accuracy reaches this floor (ties: the more robust); `None` keeps the
    /// best robust validation accuracy.
    #[serde(default)]
    pub min_val_robust: Option<f64>,
}

impl AdversarialConfig {
    /// The budget at a point of training (`epoch` counts fractions of epochs).
    pub(crate) fn eps_at(&self, epoch: f64) -> f32 {
        if self.ramp_epochs <= 0.0 {
            return self.eps;
        }
        self.eps * (epoch / self.ramp_epochs).clamp(0.0, 1.0) as f32
    }

    /// The PGD of the training attack at budget `eps` (random start, no early stop).
    pub fn attack(&self, eps: f32) -> Pgd {
        Pgd {
            norm: self.norm,
            eps,
            step: self.step_size * eps / self.eps.max(f32::MIN_POSITIVE),
            iterations: self.steps,
            random_init: true,
            restarts: 1,
            early_stop: false,
        }
    }

    /// The validation attack: PGD at the full budget, `val_steps` steps of 2.5 eps / steps.
    pub(crate) fn val_attack(&self) -> Pgd {
        Pgd {
            norm: self.norm,
            eps: self.eps,
            step: 2.5 * self.eps / self.val_steps.max(1) as f32,
            iterations: self.val_steps,
            random_init: true,
            restarts: 1,
            early_stop: false,
        }
    }

    fn check(&self) -> Result<()> {
        if !matches!(self.norm, Norm::L2 | Norm::Linf) {
            return Err(Error::Invalid(
                "adversarial training supports the L2 and Linf norms".into(),
            ));
        }
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !(positive(self.eps) && positive(self.step_size)) || self.steps == 0 {
            return Err(Error::Invalid(
                "adversarial training needs eps > 0, a step size > 0 and at least one step".into(),
            ));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0 && self.ramp_epochs.is_finite()) {
            return Err(Error::Invalid(
                "TRADES beta must be >= 0 and the ramp finite".into(),
            ));
        }
        Ok(())
    }
}

/// What a classifier is trained with beyond the shared run options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClassifierTrainConfig {
    /// Seeded augmentation of every training batch (the default: none).
    pub augment: Augment,
    /// Train against an adversary (else plain cross-entropy).
    pub adversarial: Option<AdversarialConfig>,
    /// Validate and save an exponential moving average of the weights with this decay per
    /// optimiser step (else the weights themselves).
    #[serde(default)]
    pub average: Option<f64>,
}

/// Trains `model` (created on an autodiff `device`) on `train`, validating on `val` after every
/// epoch and keeping the best checkpoint in `<out_dir>/<name>.safetensors`: the best
/// validation accuracy, or with adversarial training the best robust validation accuracy
/// (PGD at the full budget on the first `val_images` validation images). With
/// `cfg.average`, the moving average of the weights is what is validated and saved.
pub fn train_classifier<M: ClassifierNet>(
    model: M,
    train: &ImageSet,
    val: &ImageSet,
    cfg: &ClassifierTrainConfig,
    run: &RunOptions,
    device: &Device,
) -> Result<Progress> {
    if train.is_empty() || val.is_empty() {
        return Err(Error::Invalid(
            "training and validation sets must not be empty".into(),
        ));
    }
    if let Some(adv) = &cfg.adversarial {
        adv.check()?;
    }
    cfg.augment.check()?;
    train.check_labels(CLASSES)?;
    val.check_labels(CLASSES)?;
    let (mut model, mut optim, mut progress, mut average) = state::start(run, model, cfg.average)?;
    let plain = device.clone().inner();
    let channels = train.shape[0];
    let batches_per_epoch = train.len().div_ceil(run.batch_size.max(1));
    for epoch in progress.epochs_done..run.epochs {
        let lr = run.lr_at(epoch);
        let bar = epoch_bar(run.progress, train.len(), epoch, run.epochs);
        let (mut loss_sum, mut right, mut seen) = (0f64, 0usize, 0usize);
        let start = std::time::Instant::now();
        let batches = Batches::shuffled(
            train.len(),
            run.batch_size,
            derive_seed(run.seed, epoch as u64, 0),
        );
        for (bi, idx) in batches.enumerate() {
            let b = cfg.augment.apply(
                &train.select(&idx),
                derive_seed(run.seed, epoch as u64, 1 + bi as u64),
            );
            let n = b.len();
            let adv = cfg.adversarial.as_ref().map(|a| {
                let at = epoch as f64 + bi as f64 / batches_per_epoch as f64;
                (a, a.eps_at(at))
            });
            let step_seed = derive_seed(run.seed, epoch as u64, 0x1_0000 + bi as u64);
            let (next, loss, logits) =
                train_step(model, &mut optim, lr, &b, adv, step_seed, device);
            model = next;
            if let Some(a) = &mut average {
                a.update(&model);
            }
            loss_sum += loss as f64 * n as f64;
            let pred = argmax_rows(&logits, CLASSES);
            right += pred.iter().zip(&b.labels).filter(|(p, l)| p == l).count();
            seen += n;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        let mut log = EpochLog::new();
        let frozen = match &average {
            Some(a) => {
                let raw = evaluate(&model.valid(), val, run.batch_size, &plain).1;
                log.insert("raw_val_accuracy".into(), raw);
                log.insert("average_decay".into(), a.current_decay());
                a.model.clone()
            }
            None => model.valid(),
        };
        let (val_loss, val_acc) = evaluate(&frozen, val, run.batch_size, &plain);
        log.insert("epoch".into(), (epoch + 1) as f64);
        log.insert("lr".into(), lr);
        log.insert("train_loss".into(), loss_sum / seen as f64);
        log.insert("val_loss".into(), val_loss);
        log.insert("val_accuracy".into(), val_acc);
        log.insert("seconds".into(), secs);
        log.insert("images_per_second".into(), seen as f64 / secs);
        let mut criterion = ("val_accuracy", val_acc);
        if let Some(adv) = &cfg.adversarial {
            log.insert("train_eps".into(), adv.eps_at((epoch + 1) as f64) as f64);
            // Accuracy on the training batches' adversarial examples.
            log.insert("train_adv_accuracy".into(), right as f64 / seen as f64);
            let robust = robust_accuracy(
                &frozen.clone().classifier(),
                &val.take(adv.val_images),
                &adv.val_attack(),
                run.batch_size,
                derive_seed(run.seed, 77, 77),
                device,
            )?;
            log.insert("val_robust_accuracy".into(), robust);
            criterion = match adv.min_val_robust {
                None => ("val_robust_accuracy", robust),
                // Accuracies move in steps of 1 / val.len(); the robust term only breaks ties.
                Some(floor) if robust >= floor => {
                    ("val_accuracy_above_floor", val_acc + 1e-4 * robust)
                }
                Some(_) => ("val_accuracy_above_floor", -0.5),
            };
            tracing::info!(
                epoch = epoch + 1,
                val_accuracy = val_acc,
                val_robust_accuracy = robust,
                "epoch done"
            );
        } else {
            log.insert("train_accuracy".into(), right as f64 / seen as f64);
            tracing::info!(
                epoch = epoch + 1,
                val_accuracy = val_acc,
                val_loss,
                "epoch done"
            );
        }
        let best = progress.best.get(criterion.0).copied().unwrap_or(-1.0);
        if criterion.1 > best {
            progress.best.insert(criterion.0.into(), criterion.1);
            progress.best_epoch.insert(criterion.0.into(), epoch + 1);
            let mut meta = CheckpointMeta::new(model.architecture(), channels);
            meta.dataset = Some(run.dataset.clone());
            meta.source = Some(run.source.clone());
            meta.metrics = log.clone();
            save_model(&frozen, &meta, run.file(".safetensors"))?;
        }
        progress.history.push(log);
        progress.epochs_done = epoch + 1;
        progress.finished = progress.epochs_done == run.epochs;
        write_logs(run, &progress)?;
        state::save(run, &model, &optim, &progress, average.as_ref())?;
    }
    Ok(progress)
}

/// One optimiser step of a classifier on batch `b`: plain cross-entropy, or with `adv` (the
/// settings and the budget at this point of training) cross-entropy on PGD examples (Madry)
/// or TRADES' loss, the examples crafted against the current model by the attack module's
/// PGD. Returns the updated model, the loss and the logits the loss was taken on (adversarial
/// ones when training adversarially).
pub fn train_step<M: ClassifierNet>(
    model: M,
    optim: &mut ModuleOptimizer,
    lr: f64,
    b: &ImageSet,
    adv: Option<(&AdversarialConfig, f32)>,
    seed: u64,
    device: &Device,
) -> (M, f32, Vec<f32>) {
    let n = b.len();
    let [c, h, w] = b.shape;
    let per = b.image_len();
    let target = one_hot(&b.labels, CLASSES, device);
    let (loss, logits) = match adv {
        None => {
            let logits = model.logits(b.tensor(0, n, device));
            (cross_entropy(logits.clone(), target), logits)
        }
        Some((adv, eps)) => {
            let attacker = AttackModel::new(&model.valid().classifier(), device);
            let mut rng = StdRng::seed_from_u64(seed);
            let pgd = adv.attack(eps);
            let x_adv = if eps == 0.0 {
                b.images.clone()
            } else {
                match adv.method {
                    AdversarialMethod::Pgd => pgd.ascend(
                        &b.images,
                        per,
                        &mut rng,
                        |xs, rows| {
                            let ys: Vec<usize> = rows.iter().map(|&j| b.labels[j]).collect();
                            attacker.loss_grad(xs, &ys, LossKind::CrossEntropy).1
                        },
                        |_, rows| rows.to_vec(),
                    ),
                    AdversarialMethod::Trades => {
                        let p = attacker.probabilities(&b.images);
                        pgd.ascend(
                            &b.images,
                            per,
                            &mut rng,
                            |xs, rows| {
                                let pr = gather_images(&p, rows, CLASSES);
                                attacker.kl_grad(xs, &pr)
                            },
                            |_, rows| rows.to_vec(),
                        )
                    }
                }
            };
            let xa = tensor4(x_adv, [n, c, h, w], device);
            match adv.method {
                AdversarialMethod::Pgd => {
                    let logits = model.logits(xa);
                    (cross_entropy(logits.clone(), target), logits)
                }
                AdversarialMethod::Trades => {
                    let both = Tensor::cat(vec![b.tensor(0, n, device), xa], 0);
                    let all = model.logits(both);
                    let clean = all.clone().narrow(0, 0, n);
                    let adv_logits = all.narrow(0, n, n);
                    let ce = cross_entropy(clean.clone(), target);
                    let p = softmax(clean.clone(), 1);
                    let kl = (p * (log_softmax(clean, 1) - log_softmax(adv_logits.clone(), 1)))
                        .sum_dim(1)
                        .mean();
                    (ce + kl.mul_scalar(adv.beta), adv_logits)
                }
            }
        }
    };
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = optim.step(lr, model, grads);
    (model, to_vec(loss)[0], to_vec(logits.detach()))
}

fn cross_entropy(logits: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    cross_entropy_rows(logits, target).mean()
}

/// Share of `set` a classifier still labels correctly after `attack`.
pub fn robust_accuracy(
    classifier: &crate::model::Classifier,
    set: &ImageSet,
    attack: &Pgd,
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<f64> {
    use crate::attack::Attack;
    if set.is_empty() {
        return Ok(0.0);
    }
    let model = AttackModel::new(classifier, device);
    let per = set.image_len();
    let mut right = 0usize;
    for (k, idx) in Batches::sequential(set.len(), batch_size.max(1)).enumerate() {
        let b = set.select(&idx);
        let adv = attack.perturb(
            &model,
            &b.images,
            &b.labels,
            None,
            derive_seed(seed, k as u64, 0),
        )?;
        debug_assert_eq!(adv.len(), b.len() * per);
        let pred = model.predict(&adv);
        right += pred.iter().zip(&b.labels).filter(|(p, l)| p == l).count();
    }
    Ok(right as f64 / set.len() as f64)
}

/// Mean cross-entropy and accuracy of a classifier on a set.
fn evaluate<M: ClassifierNet>(model: &M, set: &ImageSet, bs: usize, device: &Device) -> (f64, f64) {
    let (mut loss, mut right) = (0f64, 0usize);
    for idx in Batches::sequential(set.len(), bs) {
        let b = set.select(&idx);
        let logits = model.logits(b.tensor(0, b.len(), device));
        let target = one_hot(&b.labels, CLASSES, device);
        let l = cross_entropy_rows(logits.clone(), target).sum();
        loss += to_vec(l)[0] as f64;
        let pred = argmax_rows(&to_vec(logits), CLASSES);
        right += pred.iter().zip(&b.labels).filter(|(p, l)| p == l).count();
    }
    (loss / set.len() as f64, right as f64 / set.len() as f64)
}
