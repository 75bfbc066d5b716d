//! Denoiser training: `alpha * CE(C(d), y) + MSE(x, d)` with `d = clamp(D(clamp(x + noise)))`
//! and the classifier `C` frozen; optionally part of each batch is instead adversarial
//! (PGD against `C(clamp(D(x)))`, the denoiser being trained included), with the same loss
//! towards the clean image.

use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use super::state::{self, Progress};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{DenoiserNet, EpochLog, RunOptions, derive_seed, epoch_bar, write_logs};
use crate::attack::{AttackModel, LossKind, Norm, Pgd};
use crate::backend::Device;
use crate::data::{Augment, Batches, ImageSet, add_gaussian_noise_tensor};
use crate::defense::score::adversarial_score;
use crate::error::{Error, Result};
use crate::eval::detection::{roc_auc, tpr_at_fpr};
use crate::eval::ssim_per_image;
use crate::model::CLASSES;
use crate::model::checkpoint::{CheckpointMeta, save_model};
use crate::model::{Classifier, Denoiser, EdgeMethod};
use crate::util::{argmax_rows, cross_entropy_rows, one_hot, tensor4, to_vec};
use crate::util::{row, row_mut};

/// What a denoiser run trains for.
#[derive(Debug, Clone)]
pub struct DenoiserTrainConfig {
    /// Noise level sigma in 1/255 units.
    pub noise: f32,
    /// Weight of the classification loss.
    pub alpha: f32,
    /// Edge method of a Defed (recorded in the checkpoint).
    pub edge: Option<EdgeMethod>,
    /// Epochs over which the class-loss weight ramps linearly from 0 up to `alpha` (0: no
    /// ramp). Early in training the class loss dominates and stalls the vision loss; the ramp
    /// lets the denoiser learn to denoise first.
    pub alpha_warmup: usize,
    /// Train on adversarial examples as well as noisy images (else the paper's Gaussian-only
    /// recipe).
    pub adversarial: Option<DenoiserAdversarial>,
    /// Measure detection quality on the validation digits after every epoch and keep the best
    /// checkpoint by it (`-best-detect.safetensors`).
    pub detection: Option<DetectionSelection>,
    /// Validate and save an exponential moving average of the weights with this decay per
    /// optimiser step (else the weights themselves).
    pub average: Option<f64>,
    /// Seeded augmentation of the clean training images, before the noise (the default: none).
    pub augment: Augment,
}

/// Checkpoint selection by what a denoiser is for: telling adversarial from benign images.
///
/// Before training, PGD examples are crafted against the frozen classifier from the first
/// `images` correctly classified validation digits (one threat per image, in turn; a fixed
/// seed), and only the successful ones are kept. After every epoch the denoiser's adversarial
/// score ([`crate::defense::score`]) is computed on those benign digits and adversarial
/// examples; the log gets the ROC-AUC (`val_detect_auc`) and the detection rate at a
/// false-positive rate of `fpr` (`val_detect_tpr`), and the checkpoint with the highest
/// detection rate (ties: AUC) is kept. With `min_psnr`, only epochs whose validation PSNR
/// reaches it compete (a denoiser must still denoise); while none does, the one nearest it is
/// kept.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DetectionSelection {
    /// Threat models `(norm, eps)` of the validation attacks.
    pub threats: Vec<(Norm, f32)>,
    /// Validation digits attacked (and scored as benign).
    pub images: usize,
    /// PGD steps (random start, step 2.5 eps / steps).
    pub steps: usize,
    /// False-positive rate at which the detection rate is read.
    pub fpr: f64,
    /// Validation PSNR (dB) an epoch needs to compete (else every epoch competes).
    #[serde(default)]
    pub min_psnr: Option<f64>,
}

impl Default for DetectionSelection {
    /// The three PGD norms of the paper's attack grid, 500 digits, 20 steps, 2% FPR.
    fn default() -> Self {
        DetectionSelection {
            threats: vec![(Norm::L1, 15.0), (Norm::L2, 1.5), (Norm::Linf, 0.3)],
            images: 500,
            steps: 20,
            fpr: 0.02,
            min_psnr: None,
        }
    }
}

/// The value an epoch's checkpoint competes with for `-best-detect` (higher is better): the
/// detection rate, ties broken by the ROC-AUC (rates move in steps of 1 / adversarial images).
/// Below a PSNR floor the floor comes first: such an epoch ranks below every epoch above it
/// (rate and AUC are at most 1), and among such epochs the one nearest the floor wins.
fn detection_criterion(tpr: f64, auc: f64, psnr: f64, min_psnr: Option<f64>) -> f64 {
    match min_psnr {
        Some(floor) if psnr < floor => -2.0 - (floor - psnr),
        _ => tpr + 1e-3 * auc,
    }
}

/// The benign and adversarial validation images of a [`DetectionSelection`].
struct DetectionSet {
    benign: ImageSet,
    adversarial: Vec<f32>,
    fpr: f64,
}

impl DetectionSelection {
    /// The validation attack: every image attacked, threats in turn.
    fn attack(&self) -> DenoiserAdversarial {
        DenoiserAdversarial {
            threats: self.threats.clone(),
            steps: self.steps,
            fraction: 1.0,
        }
    }

    fn check(&self) -> Result<()> {
        self.attack()
            .check_norms(&[Norm::L1, Norm::L2, Norm::Linf])?;
        if self.images == 0 || !(self.fpr > 0.0 && self.fpr < 1.0) {
            return Err(Error::Invalid(
                "detection selection needs at least one image and a false-positive rate in (0, 1)"
                    .into(),
            ));
        }
        if self.min_psnr.is_some_and(|db| !db.is_finite()) {
            return Err(Error::Invalid(
                "the detection selection's PSNR floor must be a finite number of dB".into(),
            ));
        }
        Ok(())
    }

    fn build(
        &self,
        classifier: &Classifier,
        val: &ImageSet,
        seed: u64,
        device: &Device,
    ) -> Result<DetectionSet> {
        let target = AttackModel::new(classifier, device);
        let pred = target.predict(&val.images);
        let right: Vec<usize> = (0..val.len())
            .filter(|&i| pred[i] == val.labels[i])
            .take(self.images)
            .collect();
        let benign = val.select(&right);
        let per = benign.image_len();
        let crafted = self
            .attack()
            .craft(&target, &benign.images, &benign.labels, per, seed);
        let after = target.predict(&crafted);
        let fooled: Vec<usize> = (0..benign.len())
            .filter(|&i| after[i] != benign.labels[i])
            .collect();
        if fooled.is_empty() {
            return Err(Error::Invalid(
                "no validation attack succeeded: detection selection has nothing to detect".into(),
            ));
        }
        tracing::info!(
            benign = benign.len(),
            adversarial = fooled.len(),
            "detection validation set"
        );
        Ok(DetectionSet {
            adversarial: crate::attack::gather_images(&crafted, &fooled, per),
            benign,
            fpr: self.fpr,
        })
    }
}

impl DetectionSet {
    /// `(ROC-AUC, detection rate at the FPR)` of `denoiser`'s score.
    fn measure(
        &self,
        classifier: &Classifier,
        denoiser: &Denoiser,
        alpha: f32,
        bs: usize,
        device: &Device,
    ) -> (f64, f64) {
        let [c, h, w] = self.benign.shape;
        let per = c * h * w;
        let scores = |images: &[f32]| -> Vec<f64> {
            images
                .chunks(bs.max(1) * per)
                .flat_map(|chunk| {
                    let x = tensor4(chunk.to_vec(), [chunk.len() / per, c, h, w], device);
                    adversarial_score(classifier, denoiser, alpha, x).total
                })
                .map(f64::from)
                .collect()
        };
        let benign = scores(&self.benign.images);
        let adv = scores(&self.adversarial);
        (roc_auc(&benign, &adv), tpr_at_fpr(&benign, &adv, self.fpr))
    }
}

/// The adversarial part of denoiser training.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DenoiserAdversarial {
    /// Threat models `(norm, eps)`; the adversarial images of a batch are split among them.
    pub threats: Vec<(Norm, f32)>,
    /// PGD steps (random start, step 2.5 eps / steps).
    pub steps: usize,
    /// Share of each batch that is adversarial, in `(0, 1]`.
    pub fraction: f32,
}

impl DenoiserAdversarial {
    fn check(&self) -> Result<()> {
        self.check_norms(&[Norm::L2, Norm::Linf])
    }

    fn check_norms(&self, norms: &[Norm]) -> Result<()> {
        if self.threats.is_empty()
            || self
                .threats
                .iter()
                .any(|&(n, e)| !(norms.contains(&n) && e.is_finite() && e > 0.0))
        {
            return Err(Error::Invalid(format!(
                "PGD threats against a denoiser must use {} with eps > 0",
                norms
                    .iter()
                    .map(|n| n.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        if self.steps == 0 || !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(Error::Invalid(
                "denoiser adversarial training needs steps >= 1 and a fraction in (0, 1]".into(),
            ));
        }
        Ok(())
    }

    fn pgd(&self, norm: Norm, eps: f32) -> Pgd {
        Pgd {
            norm,
            eps,
            step: 2.5 * eps / self.steps as f32,
            iterations: self.steps,
            random_init: true,
            restarts: 1,
            early_stop: false,
        }
    }

    /// Adversarial versions of `images` (flat, `per` values each) against `target`, image `i`
    /// under threat `i mod threats`.
    fn craft(
        &self,
        target: &AttackModel,
        images: &[f32],
        labels: &[usize],
        per: usize,
        seed: u64,
    ) -> Vec<f32> {
        let mut out = images.to_vec();
        let mut rng = StdRng::seed_from_u64(seed);
        for (t, &(norm, eps)) in self.threats.iter().enumerate() {
            let rows: Vec<usize> = (t..labels.len()).step_by(self.threats.len()).collect();
            if rows.is_empty() {
                continue;
            }
            let x0 = crate::attack::gather_images(images, &rows, per);
            let ys: Vec<usize> = rows.iter().map(|&i| labels[i]).collect();
            let adv = self.pgd(norm, eps).ascend(
                &x0,
                per,
                &mut rng,
                |xs, live| {
                    let yl: Vec<usize> = live.iter().map(|&j| ys[j]).collect();
                    target.loss_grad(xs, &yl, LossKind::CrossEntropy).1
                },
                |_, live| live.to_vec(),
            );
            for (k, &i) in rows.iter().enumerate() {
                row_mut(&mut out, i, per).copy_from_slice(row(&adv, k, per));
            }
        }
        out
    }
}

impl DenoiserTrainConfig {
    /// Rejects settings no run can use (checked again by [`train_denoiser`]; callers may check
    /// first, before any other work).
    pub fn check(&self) -> Result<()> {
        if let Some(adv) = &self.adversarial {
            adv.check()?;
        }
        if let Some(sel) = &self.detection {
            sel.check()?;
        }
        self.augment.check()
    }

    /// The class-loss weight used for training in `epoch` (0-based).
    pub(crate) fn alpha_at(&self, epoch: usize) -> f32 {
        if self.alpha_warmup == 0 {
            self.alpha
        } else {
            self.alpha * (epoch as f32 / self.alpha_warmup as f32).min(1.0)
        }
    }
}

/// Validation figures of a denoiser.
struct ValFigures {
    vision: f64,
    class: f64,
    accuracy: f64,
    psnr: f64,
    ssim: f64,
}

/// What [`validate`] runs on.
struct ValSetup<'a> {
    classifier: &'a Classifier,
    set: &'a ImageSet,
    cfg: &'a DenoiserTrainConfig,
    seed: u64,
    bs: usize,
    device: &'a Device,
}

/// Validation figures of `model` (or of the bare noisy images when `model` is `None`).
fn validate<M: DenoiserNet>(model: Option<&M>, v: &ValSetup<'_>) -> ValFigures {
    let ValSetup {
        classifier,
        set,
        cfg,
        seed,
        bs,
        device,
    } = *v;
    let (mut sq, mut ce, mut right, mut ssim) = (0f64, 0f64, 0usize, 0f64);
    let per = set.image_len() as f64;
    for (k, idx) in Batches::sequential(set.len(), bs).enumerate() {
        let b = set.select(&idx);
        let x = b.tensor(0, b.len(), device);
        let xn =
            add_gaussian_noise_tensor(x.clone(), cfg.noise, derive_seed(seed, u64::MAX, k as u64));
        let d = match model {
            Some(m) => m.denoise_raw(xn).clamp(0.0, 1.0),
            None => xn,
        };
        let diff = x.clone() - d.clone();
        sq += to_vec((diff.clone() * diff).sum())[0] as f64;
        let logits = classifier.logits(d.clone());
        let target = one_hot(&b.labels, CLASSES, device);
        ce += to_vec(cross_entropy_rows(logits.clone(), target).sum())[0] as f64;
        let pred = argmax_rows(&to_vec(logits), CLASSES);
        right += pred.iter().zip(&b.labels).filter(|(p, l)| p == l).count();
        ssim += ssim_per_image(x, d).iter().map(|&v| v as f64).sum::<f64>();
    }
    let n = set.len() as f64;
    let mse = sq / (n * per);
    ValFigures {
        vision: mse,
        class: ce / n,
        accuracy: right as f64 / n,
        psnr: 10.0 * (1.0 / mse).log10(),
        ssim: ssim / n,
    }
}

/// Trains a denoiser (created on an autodiff `device`) against a frozen `classifier` (loaded
/// on the same device). Keeps three checkpoints, by validation total loss
/// (`<name>.safetensors`), class loss (`-best-class`) and vision loss (`-best-vision`).
#[allow(clippy::too_many_arguments)]
pub fn train_denoiser<M: DenoiserNet>(
    model: M,
    classifier: &Classifier,
    train: &ImageSet,
    val: &ImageSet,
    cfg: &DenoiserTrainConfig,
    run: &RunOptions,
    device: &Device,
) -> Result<Progress> {
    if train.is_empty() || val.is_empty() {
        return Err(Error::Invalid(
            "training and validation sets must not be empty".into(),
        ));
    }
    if classifier.input_shape() != train.shape {
        return Err(Error::Shape(format!(
            "the classifier takes {:?} images, the training data is {:?}",
            classifier.input_shape(),
            train.shape
        )));
    }
    crate::model::check_denoiser_input(
        [1, train.shape[0], train.shape[1], train.shape[2]],
        train.shape[0],
    )?;
    train.check_labels(classifier.num_classes())?;
    val.check_labels(classifier.num_classes())?;
    cfg.check()?;
    let (mut model, mut optim, mut progress, mut average) = state::start(run, model, cfg.average)?;
    let plain = device.clone().inner();
    let per = train.image_len();
    let val_classifier = classifier.clone().valid();
    let detection = match &cfg.detection {
        Some(sel) if progress.epochs_done < run.epochs => Some(sel.build(
            &val_classifier,
            val,
            derive_seed(run.seed, 0xde7, 0),
            &plain,
        )?),
        _ => None,
    };
    let alpha = cfg.alpha;
    for epoch in progress.epochs_done..run.epochs {
        let lr = run.lr_at(epoch);
        let train_alpha = cfg.alpha_at(epoch);
        let bar = epoch_bar(run.progress, train.len(), epoch, run.epochs);
        let (mut vis_sum, mut cls_sum, mut seen) = (0f64, 0f64, 0usize);
        let start = std::time::Instant::now();
        let order = derive_seed(run.seed, epoch as u64, 0);
        for (k, idx) in Batches::shuffled(train.len(), run.batch_size, order).enumerate() {
            let b = cfg.augment.apply(
                &train.select(&idx),
                derive_seed(run.seed, epoch as u64, 0x3_0000 + k as u64),
            );
            let x = b.tensor(0, b.len(), device);
            let noise_seed = derive_seed(run.seed, epoch as u64, k as u64 + 1);
            let mut xn = add_gaussian_noise_tensor(x.clone(), cfg.noise, noise_seed);
            if let Some(adv) = &cfg.adversarial {
                // The last `n_adv` images of the batch become adversarial examples against the
                // classifier behind the current denoiser.
                let n = b.len();
                let n_adv = ((n as f32 * adv.fraction).round() as usize).clamp(1, n);
                let rows: Vec<usize> = (n - n_adv..n).collect();
                let target = AttackModel::denoised(classifier, &model.valid().denoiser(), device);
                let crafted = adv.craft(
                    &target,
                    &crate::attack::gather_images(&b.images, &rows, per),
                    &rows.iter().map(|&i| b.labels[i]).collect::<Vec<_>>(),
                    per,
                    derive_seed(run.seed, epoch as u64, 0x2_0000 + k as u64),
                );
                let mut input = to_vec(xn);
                input[(n - n_adv) * per..].copy_from_slice(&crafted);
                let [c, h, w] = b.shape;
                xn = tensor4(input, [n, c, h, w], device);
            }
            let d = model.denoise_raw(xn).clamp(0.0, 1.0);
            let diff = x - d.clone();
            let vision = (diff.clone() * diff).mean();
            let target = one_hot(&b.labels, CLASSES, device);
            let class: Tensor<1> = cross_entropy_rows(classifier.logits(d), target).mean();
            let loss = class.clone().mul_scalar(train_alpha) + vision.clone();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            if let Some(a) = &mut average {
                a.update(&model);
            }
            vis_sum += to_vec(vision)[0] as f64 * b.len() as f64;
            cls_sum += to_vec(class)[0] as f64 * b.len() as f64;
            seen += b.len();
            bar.inc(b.len() as u64);
        }
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        let setup = ValSetup {
            classifier: &val_classifier,
            set: val,
            cfg,
            seed: run.seed,
            bs: run.batch_size,
            device: &plain,
        };
        let mut log = EpochLog::new();
        let valid_model = match &average {
            Some(a) => {
                let raw = validate(Some(&model.valid()), &setup);
                log.insert("raw_val_psnr".into(), raw.psnr);
                log.insert("raw_val_accuracy".into(), raw.accuracy);
                log.insert("average_decay".into(), a.current_decay());
                a.model.clone()
            }
            None => model.valid(),
        };
        let v = validate(Some(&valid_model), &setup);
        log.insert("epoch".into(), (epoch + 1) as f64);
        log.insert("lr".into(), lr);
        log.insert("train_alpha".into(), train_alpha as f64);
        log.insert("train_vision".into(), vis_sum / seen as f64);
        log.insert("train_class".into(), cls_sum / seen as f64);
        log.insert(
            "train_total".into(),
            (alpha as f64 * cls_sum + vis_sum) / seen as f64,
        );
        log.insert("val_vision".into(), v.vision);
        log.insert("val_class".into(), v.class);
        log.insert("val_total".into(), alpha as f64 * v.class + v.vision);
        log.insert("val_accuracy".into(), v.accuracy);
        log.insert("val_mse".into(), v.vision);
        log.insert("val_psnr".into(), v.psnr);
        log.insert("val_ssim".into(), v.ssim);
        log.insert("seconds".into(), secs);
        log.insert("images_per_second".into(), seen as f64 / secs);
        if epoch == 0 {
            let bare = validate(None::<&M>, &setup);
            log.insert("noisy_val_accuracy".into(), bare.accuracy);
            log.insert("noisy_val_psnr".into(), bare.psnr);
        }
        if let Some(set) = &detection {
            let (auc, tpr) = set.measure(
                &val_classifier,
                &valid_model.clone().denoiser(),
                alpha,
                run.batch_size,
                &plain,
            );
            log.insert("val_detect_auc".into(), auc);
            log.insert("val_detect_tpr".into(), tpr);
            let floor = cfg.detection.as_ref().and_then(|sel| sel.min_psnr);
            log.insert(
                "val_detect".into(),
                detection_criterion(tpr, auc, v.psnr, floor),
            );
        }
        tracing::info!(
            epoch = epoch + 1,
            val_total = alpha as f64 * v.class + v.vision,
            val_accuracy = v.accuracy,
            val_psnr = v.psnr,
            "epoch done"
        );
        let mut meta = CheckpointMeta::new(model.architecture(), train.shape[0]);
        meta.edge = cfg.edge;
        meta.noise = Some(cfg.noise);
        meta.alpha = Some(cfg.alpha);
        meta.dataset = Some(run.dataset.clone());
        meta.source = Some(run.source.clone());
        meta.metrics = log.clone();
        // (criterion, file suffix, higher is better)
        for (key, suffix, higher) in [
            ("val_total", ".safetensors", false),
            ("val_class", "-best-class.safetensors", false),
            ("val_vision", "-best-vision.safetensors", false),
            ("val_detect", "-best-detect.safetensors", true),
        ] {
            let Some(&value) = log.get(key) else {
                continue;
            };
            let better = |b: f64| if higher { value > b } else { value < b };
            if progress.best.get(key).is_none_or(|&b| better(b)) {
                progress.best.insert(key.into(), value);
                progress.best_epoch.insert(key.into(), epoch + 1);
                save_model(&valid_model, &meta, run.file(suffix))?;
            }
        }
        progress.history.push(log);
        progress.epochs_done = epoch + 1;
        progress.finished = progress.epochs_done == run.epochs;
        write_logs(run, &progress)?;
        state::save(run, &model, &optim, &progress, average.as_ref())?;
    }
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_floor_ranks_every_epoch_above_it_first() {
        let c = detection_criterion;
        // Without a floor: the detection rate, then the AUC.
        assert!(c(0.81, 0.98, 18.9, None) > c(0.80, 0.99, 19.3, None));
        assert!(c(0.80, 0.99, 19.3, None) > c(0.80, 0.98, 19.3, None));
        // With one: the weakest detector above the floor beats the best below it ...
        assert!(c(0.0, 0.5, 19.0, Some(19.0)) > c(1.0, 1.0, 18.99, Some(19.0)));
        // ... and below it the epoch nearest the floor wins, whatever it detects.
        assert!(c(0.80, 0.99, 18.95, Some(19.0)) > c(0.81, 0.98, 18.9, Some(19.0)));
    }

    #[test]
    fn alpha_ramps_up() {
        let cfg = DenoiserTrainConfig {
            noise: 40.0,
            alpha: 2.0,
            edge: None,
            alpha_warmup: 4,
            adversarial: None,
            detection: None,
            average: None,
            augment: Augment::default(),
        };
        let got: Vec<f32> = (0..6).map(|e| cfg.alpha_at(e)).collect();
        assert_eq!(got, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.0]);
        let flat = DenoiserTrainConfig {
            alpha_warmup: 0,
            ..cfg
        };
        assert_eq!(flat.alpha_at(0), 2.0);
    }
}
