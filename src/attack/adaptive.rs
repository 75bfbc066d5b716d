//! The adaptive (white-box) attack on a whole defender.
//!
//! Threat model: the attacker knows the classifier, every denoiser, alpha, the decision rule
//! and the thresholds, and has gradients of all of them. Two goals, each optimised with APGD
//! ([`super::apgd`]):
//!
//! - **evade**: a wrong label with no flag. Maximise
//!   `min(max_{j != y} z_j - z_y, kappa) - lambda * sum_i max(0, s_i(x) - t_i + m_i)`, with `z`
//!   the classifier's logits on `x`, `s_i` the adversarial scores, `t_i` the thresholds and
//!   margins `m_i = margin * t_i`; lambda is searched over a list, each value run on the images
//!   the previous ones did not break.
//! - **targeted evade** (with `targets > 0`): the same, aimed at one wrong class `t` at a time
//!   (the classes the classifier ranks highest after the true one on the clean image):
//!   `min(z_t - max_{j != t} z_j, kappa) - lambda * sum_i max(0, s_i^t(x) - t_i + m_i)`, where
//!   `s_i^t` takes its class term against `t`. The untargeted scores take theirs against the
//!   current prediction, so they jump when the prediction flips and the search can oscillate at
//!   the decision boundary; with the target fixed the objective is continuous, and equals the
//!   defender's score wherever the attack has succeeded.
//! - **corrupt**: be flagged but get a wrong corrected label. Maximise the cross-entropy of the
//!   true class under the mean softmax of the denoised images, minus
//!   `lambda * sum_i max(0, t_i + m_i - s_i)` so every denoiser flags (the corrected label then
//!   sums all of them).
//!
//! With starting points (e.g. [`adaptive_attack_from`] with the transfer examples: PGD on the
//! bare classifier), the evade runs and the corrupt run are made a second time from them, on
//! the images the runs from the clean images left: the attack then breaks at least what the
//! starts break, and can move a flagged transfer example below the thresholds.
//!
//! Gradients are exact: the clamp of the denoised image is part of the defended function and
//! its zero gradient outside `[0, 1]` is the true one. `straight_through` replaces it with the
//! identity in the backward pass (BPDA), for when that blocks the search. The prediction
//! `argmax C(x)` inside the scores is piecewise constant and is held fixed per step. Every
//! outcome is checked afterwards with the defender's own (non-differentiable) decision.

use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use super::apgd::{ApgdConfig, Objective, ObjectiveEval, apgd_from};
use super::{Norm, gather_images, ranked_wrong_classes};
use crate::backend::Device;
use crate::data::ImageSet;
use crate::defense::score::{Clamp, score_tensors};
use crate::defense::{Defender, Policy, Scores, Verdict, decide_with};
use crate::error::{Error, Result};
use crate::model::{Classifier, Denoiser};
use crate::util::{argmax_rows, margin_rows, one_hot, tensor4, to_vec};
use crate::util::{row, row_mut};

/// Settings of the adaptive attack.
#[derive(Debug, Clone)]
pub struct AdaptiveConfig {
    /// Threat model.
    pub norm: Norm,
    /// Budget.
    pub eps: f32,
    /// APGD iterations per run.
    pub iterations: usize,
    /// APGD restarts per run.
    pub restarts: usize,
    /// Penalty weights tried in turn for the evade goal.
    pub lambdas: Vec<f32>,
    /// Also run the evade goal targeted at each of this many wrong classes (0: untargeted only).
    pub targets: usize,
    /// Safety margin on the thresholds, as a share of each threshold.
    pub margin: f32,
    /// Cap on the classifier margin in the evade objective (logits).
    pub kappa: f32,
    /// Identity gradient through the clamp of the denoised images (BPDA).
    pub straight_through: bool,
    /// Images per batch.
    pub batch_size: usize,
    /// Seed of the random restarts.
    pub seed: u64,
    /// In [`crate::eval::adaptive::evaluate_adaptive`]: make the runs again from the transfer
    /// examples (PGD on the bare classifier), so the attack breaks at least what they break.
    pub from_transfer: bool,
}

impl AdaptiveConfig {
    /// Defaults: 100 iterations, 1 restart, lambda in {1, 10, 100}, margin 5%, kappa 5, runs
    /// made again from the transfer examples.
    pub fn new(norm: Norm, eps: f32) -> Self {
        AdaptiveConfig {
            norm,
            eps,
            iterations: 100,
            restarts: 1,
            lambdas: vec![1.0, 10.0, 100.0],
            targets: 0,
            margin: 0.05,
            kappa: 5.0,
            straight_through: false,
            batch_size: 32,
            seed: 0,
            from_transfer: true,
        }
    }
}

/// The defender on an autodiff device, in inference mode.
struct DefenderGrad {
    classifier: Classifier,
    denoisers: Vec<Denoiser>,
    alpha: f32,
    thresholds: Vec<f32>,
    classes: usize,
    shape: [usize; 3],
    ad: Device,
}

impl DefenderGrad {
    fn new(d: &Defender, device: &Device) -> Result<Self> {
        let thresholds = d.thresholds.clone().ok_or_else(|| {
            Error::Invalid("the adaptive attack needs a calibrated bundle (thresholds)".into())
        })?;
        let ad = device.clone().inner().autodiff();
        Ok(DefenderGrad {
            classifier: d.classifier.clone().to_device(&ad).frozen(),
            denoisers: d
                .denoisers
                .iter()
                .map(|x| x.net.clone().to_device(&ad).frozen())
                .collect(),
            alpha: d.alpha,
            thresholds,
            classes: d.classifier.num_classes(),
            shape: d.input_shape(),
            ad,
        })
    }

    /// Per image, the wrong classes ranked by the classifier's logits on `x` (most likely first).
    fn ranked_wrong(&self, x: &[f32], labels: &[usize]) -> Vec<Vec<usize>> {
        let [c, h, w] = self.shape;
        let n = labels.len();
        let z = to_vec(
            self.classifier
                .logits(tensor4(x.to_vec(), [n, c, h, w], &self.ad))
                .inner(),
        );
        ranked_wrong_classes(&z, labels, self.classes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    Evade,
    /// Evade as the classifier's `rank`-th most likely wrong class on the clean image (1-based).
    EvadeAs {
        rank: usize,
    },
    Corrupt,
}

struct DefenderObjective<'a> {
    g: &'a DefenderGrad,
    labels: &'a [usize],
    /// Per image (like `labels`): the target class of [`Goal::EvadeAs`].
    targets: &'a [usize],
    goal: Goal,
    lambda: f32,
    cfg: &'a AdaptiveConfig,
}

impl Objective for DefenderObjective<'_> {
    fn eval(&self, x: &[f32], idx: &[usize]) -> Result<ObjectiveEval> {
        let g = self.g;
        let n = idx.len();
        let k = g.classes;
        let [c, h, w] = g.shape;
        let labels: Vec<usize> = idx.iter().map(|&i| self.labels[i]).collect();
        let xt = tensor4(x.to_vec(), [n, c, h, w], &g.ad).require_grad();
        let z0 = g.classifier.logits(xt.clone());
        let pred = argmax_rows(&to_vec(z0.clone().inner()), k);
        // The label the scores' class term is taken against: the prediction, or the target.
        let score_labels: Vec<usize> = match self.goal {
            Goal::EvadeAs { .. } => idx.iter().map(|&i| self.targets[i]).collect(),
            _ => pred.clone(),
        };
        let label1h = one_hot(&score_labels, k, &g.ad);
        let y1h = one_hot(&labels, k, &g.ad);
        let mut scores: Vec<Tensor<1>> = Vec::new();
        let mut probs: Vec<Tensor<2>> = Vec::new();
        let clamp = if self.cfg.straight_through {
            Clamp::StraightThrough
        } else {
            Clamp::Exact
        };
        for d in &g.denoisers {
            let t = score_tensors(
                &g.classifier,
                d,
                g.alpha,
                xt.clone(),
                label1h.clone(),
                clamp,
            );
            scores.push(t.total);
            probs.push(softmax(t.logits, 1));
        }
        // The defender's own decision on these exact images.
        let decision = Scores {
            total: scores.iter().map(|s| to_vec(s.clone().inner())).collect(),
            pred,
            probs: probs.iter().map(|p| to_vec(p.clone().inner())).collect(),
            ..Scores::default()
        };
        // Targeted scores are the defender's own only where the prediction is the target.
        let reached = decide_with(&decision, &g.thresholds, k)
            .iter()
            .zip(labels.iter().zip(&score_labels))
            .map(|(v, (&y, &t))| match self.goal {
                Goal::Evade => v.evades(y),
                // The targets are wrong classes by construction.
                Goal::EvadeAs { .. } => !v.adversarial && v.label == t,
                Goal::Corrupt => v.label != y,
            })
            .collect();
        let value: Tensor<1> = match self.goal {
            Goal::Evade | Goal::EvadeAs { .. } => {
                // Untargeted: the best wrong logit over the true one; targeted: the target's
                // logit over the best other one.
                let margin = if self.goal == Goal::Evade {
                    margin_rows(z0, y1h).neg()
                } else {
                    margin_rows(z0, label1h)
                };
                let margin = margin.clamp_max(self.cfg.kappa);
                let mut penalty: Tensor<1> = Tensor::zeros([n], &g.ad);
                for (s, &t) in scores.into_iter().zip(&g.thresholds) {
                    penalty = penalty + (s.add_scalar(-t + self.cfg.margin * t)).clamp_min(0.0);
                }
                margin - penalty.mul_scalar(self.lambda)
            }
            Goal::Corrupt => {
                let m = probs.len() as f32;
                let mut mean: Tensor<2> = Tensor::zeros([n, k], &g.ad);
                for p in probs {
                    mean = mean + p;
                }
                let py = (mean.div_scalar(m) * y1h).sum_dim(1).reshape([n]);
                let wrong = py.add_scalar(1e-12).log().neg();
                let mut penalty: Tensor<1> = Tensor::zeros([n], &g.ad);
                for (s, &t) in scores.into_iter().zip(&g.thresholds) {
                    penalty =
                        penalty + (s.neg().add_scalar(t + self.cfg.margin * t)).clamp_min(0.0);
                }
                wrong - penalty.mul_scalar(self.lambda)
            }
        };
        let grads = value.clone().sum().backward();
        let grad = to_vec(
            xt.grad(&grads)
                .ok_or_else(|| Error::Invalid("no input gradient through the defender".into()))?,
        );
        Ok(ObjectiveEval {
            value: to_vec(value.inner()),
            grad,
            reached,
        })
    }
}

/// The adaptive attack's figures for one budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdaptiveReport {
    /// Threat model.
    pub norm: Norm,
    /// Budget.
    pub eps: f32,
    /// Images attacked.
    pub images: usize,
    /// Share ending with a wrong label and no flag (the attack's full success).
    pub evade_success: f64,
    /// Share of the final adversarial inputs that the defender flags.
    pub flagged: f64,
    /// Share whose final label (corrected where flagged) is wrong.
    pub wrong_label: f64,
    /// Robust accuracy when flagged inputs are rejected (a flag counts as correct).
    pub robust_accuracy_reject: f64,
    /// Robust accuracy when flagged inputs get the corrected label.
    pub robust_accuracy_correct: f64,
    /// Robust accuracy under the bundle's own policy.
    pub robust_accuracy: f64,
    /// The bundle's policy.
    pub policy: Policy,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Largest perturbation of any final input in the threat model's norm (budget check).
    pub max_perturbation: f64,
    /// Share of the unperturbed images the defender passes unflagged (its benign pass rate on
    /// these held-out images).
    #[serde(default)]
    pub clean_pass: f64,
    /// Share of the unperturbed images that end with their true label and no flag.
    #[serde(default)]
    pub clean_accuracy: f64,
    /// The final adversarial inputs, one per image.
    #[serde(skip)]
    pub adv: Vec<f32>,
    /// The defender's verdict on each final input.
    #[serde(skip)]
    pub verdicts: Vec<Verdict>,
    /// Each final input's distance from its image in the threat model's norm.
    #[serde(skip)]
    pub perturbations: Vec<f64>,
}

/// Runs the adaptive attack on `set` (benign images with their true labels).
pub fn adaptive_attack(
    defender: &Defender,
    set: &ImageSet,
    cfg: &AdaptiveConfig,
    device: &Device,
) -> Result<AdaptiveReport> {
    adaptive_attack_from(defender, set, None, cfg, device)
}

/// [`adaptive_attack`], whose runs are made again from `starts` (one point per image of `set`,
/// flat like its images, projected onto each image's ball) on the images the runs from the
/// clean images do not break.
pub fn adaptive_attack_from(
    defender: &Defender,
    set: &ImageSet,
    starts: Option<&[f32]>,
    cfg: &AdaptiveConfig,
    device: &Device,
) -> Result<AdaptiveReport> {
    if set.is_empty() {
        return Err(Error::Invalid("no images to attack".into()));
    }
    if let Some(s) = starts
        && s.len() != set.images.len()
    {
        return Err(Error::Shape(format!(
            "{} starting values for {} image values",
            s.len(),
            set.images.len()
        )));
    }
    if set.shape != defender.input_shape() {
        return Err(Error::Shape(format!(
            "images are {:?} but the defender takes {:?}",
            set.shape,
            defender.input_shape()
        )));
    }
    if cfg.lambdas.is_empty() {
        return Err(Error::Invalid("give at least one lambda".into()));
    }
    let t0 = Instant::now();
    let g = DefenderGrad::new(defender, device)?;
    let per = set.image_len();
    let n = set.len();
    let mut adv = set.images.clone();
    for start in (0..n).step_by(cfg.batch_size.max(1)) {
        let end = (start + cfg.batch_size.max(1)).min(n);
        let x = &set.images[start * per..end * per];
        let labels = &set.labels[start..end];
        let m = end - start;
        let mut done = vec![false; m];
        let mut best = x.to_vec();
        let ranked = if cfg.targets > 0 {
            g.ranked_wrong(x, labels)
        } else {
            Vec::new()
        };
        let from_clean = cfg
            .lambdas
            .iter()
            .map(|&l| (Goal::Evade, l, false))
            .chain(
                (1..=cfg.targets.min(g.classes.saturating_sub(1))).flat_map(|rank| {
                    cfg.lambdas
                        .iter()
                        .map(move |&l| (Goal::EvadeAs { rank }, l, false))
                }),
            )
            .chain(std::iter::once((Goal::Corrupt, cfg.lambdas[0], false)));
        let from_starts = cfg
            .lambdas
            .iter()
            .map(|&l| (Goal::Evade, l, true))
            .chain(std::iter::once((Goal::Corrupt, cfg.lambdas[0], true)))
            .filter(|_| starts.is_some());
        let runs: Vec<(Goal, f32, bool)> = from_clean.chain(from_starts).collect();
        let batch_starts = starts.map(|s| &s[start * per..end * per]);
        let mut corrupted = vec![false; m];
        for (r, (goal, lambda, from_start)) in runs.into_iter().enumerate() {
            // An image whose wrong label is flagged may still be made to evade.
            let todo: Vec<usize> = (0..m)
                .filter(|&i| !done[i] && (goal != Goal::Corrupt || !corrupted[i]))
                .collect();
            if todo.is_empty() {
                continue;
            }
            let xs = gather_images(x, &todo, per);
            let run_starts = batch_starts
                .filter(|_| from_start)
                .map(|s| gather_images(s, &todo, per));
            let ls: Vec<usize> = todo.iter().map(|&i| labels[i]).collect();
            let ts: Vec<usize> = match goal {
                Goal::EvadeAs { rank } => todo.iter().map(|&i| ranked[i][rank - 1]).collect(),
                _ => Vec::new(),
            };
            let obj = DefenderObjective {
                g: &g,
                labels: &ls,
                targets: &ts,
                goal,
                lambda,
                cfg,
            };
            let res = apgd_from(
                &obj,
                &xs,
                run_starts.as_deref(),
                per,
                &ApgdConfig {
                    norm: cfg.norm,
                    eps: cfg.eps,
                    iterations: cfg.iterations,
                    restarts: cfg.restarts,
                    momentum: 0.75,
                    seed: cfg.seed.wrapping_add((start * 31 + r) as u64),
                },
            )?;
            for (j, &i) in todo.iter().enumerate() {
                let row = row(&res.adv, j, per);
                match goal {
                    Goal::Evade => {
                        // Without success, keep the candidate of the largest lambda tried,
                        // unless a corrupt run has reached its goal.
                        if res.reached[j] || !corrupted[i] {
                            row_mut(&mut best, i, per).copy_from_slice(row);
                        }
                        done[i] = res.reached[j];
                    }
                    Goal::EvadeAs { .. } => {
                        if res.reached[j] {
                            row_mut(&mut best, i, per).copy_from_slice(row);
                            done[i] = true;
                        }
                    }
                    Goal::Corrupt => {
                        if res.reached[j] {
                            row_mut(&mut best, i, per).copy_from_slice(row);
                            corrupted[i] = true;
                        }
                    }
                }
            }
        }
        adv[start * per..end * per].copy_from_slice(&best);
    }
    // The verdict on every final input comes from the defender itself.
    let verdicts =
        defender.decide(&defender.scores_batched(&adv, cfg.batch_size.max(1), device)?)?;
    let perturbations: Vec<f64> = adv
        .chunks(per)
        .zip(set.images.chunks(per))
        .map(|(a, b)| {
            let d: Vec<f32> = a.iter().zip(b).map(|(a, b)| a - b).collect();
            cfg.norm.of(&d)
        })
        .collect();
    let max_perturbation = perturbations.iter().copied().fold(0f64, f64::max);
    let (evade, flagged, wrong) = outcome_shares(&verdicts, &set.labels);
    let clean =
        defender.decide(&defender.scores_batched(&set.images, cfg.batch_size.max(1), device)?)?;
    let (_, clean_flagged, _) = outcome_shares(&clean, &set.labels);
    let clean_accuracy = clean
        .iter()
        .zip(&set.labels)
        .filter(|(v, y)| !v.adversarial && v.label == **y)
        .count() as f64
        / n as f64;
    let reject = 1.0 - evade;
    let correct = 1.0 - wrong;
    Ok(AdaptiveReport {
        norm: cfg.norm,
        eps: cfg.eps,
        images: n,
        evade_success: evade,
        flagged,
        wrong_label: wrong,
        robust_accuracy_reject: reject,
        robust_accuracy_correct: correct,
        robust_accuracy: match defender.policy {
            Policy::Reject => reject,
            Policy::Correct => correct,
        },
        policy: defender.policy,
        seconds: t0.elapsed().as_secs_f64(),
        max_perturbation,
        clean_pass: 1.0 - clean_flagged,
        clean_accuracy,
        adv,
        verdicts,
        perturbations,
    })
}

/// Shares of `verdicts` that evade the defender (wrong label, no flag), that are flagged, and
/// that end with a wrong label (corrected where flagged), against the true `labels`.
pub(crate) fn outcome_shares(verdicts: &[Verdict], labels: &[usize]) -> (f64, f64, f64) {
    let n = verdicts.len().max(1) as f64;
    let share = |f: &dyn Fn(&Verdict, usize) -> bool| {
        verdicts
            .iter()
            .zip(labels)
            .filter(|(v, y)| f(v, **y))
            .count() as f64
            / n
    };
    (
        share(&|v, y| v.evades(y)),
        share(&|v, _| v.adversarial),
        share(&|v, y| v.label != y),
    )
}
