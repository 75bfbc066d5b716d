//! The multi-denoiser defender of stage 5.
//!
//! Scores: `s_i(x) = alpha * CE(C(clamp(D_i(x))), argmax C(x)) + mean((x - clamp(D_i(x)))^2)`.
//! Detection: `x` is adversarial when any `s_i(x)` exceeds its threshold `t_i`.
//! Label: a clean-looking `x` gets `argmax C(x)`; a flagged one gets the argmax of the summed
//! softmax of `C(clamp(D_i(x)))` over the denoisers that flagged it.

use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use super::score::{Clamp, score_tensors};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::model::{CheckpointMeta, Classifier, Denoiser, check_denoiser_input};
use crate::util::{argmax_rows, one_hot, tensor4, to_vec};

/// What the defender does with an input it flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Return the corrected label (the argmax of the flagging denoisers' summed softmax), as
    /// the original does.
    #[default]
    Correct,
    /// Refuse to label it.
    Reject,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Correct => "correct",
            Policy::Reject => "reject",
        })
    }
}

impl std::str::FromStr for Policy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "correct" => Ok(Policy::Correct),
            "reject" => Ok(Policy::Reject),
            _ => Err(Error::Invalid(format!(
                "policy must be `correct` or `reject`, not `{s}`"
            ))),
        }
    }
}

/// One denoiser of a defender, with what is known about it.
#[derive(Debug, Clone)]
pub struct DefenderDenoiser {
    /// The network.
    pub net: Denoiser,
    /// Its metadata (architecture, edge method, noise level...).
    pub meta: CheckpointMeta,
    /// A display name (e.g. `defed-laplacian-n40`).
    pub name: String,
}

/// How the thresholds were set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// `k-std` (mean + k std) or `fpr` (quantiles for a false-positive rate).
    pub method: String,
    /// `k` of the `k-std` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<f64>,
    /// Target false-positive rate of the `fpr` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fpr: Option<f64>,
    /// Benign images used.
    pub images: usize,
    /// Their indices in the source split (to refuse evaluating on them).
    pub image_indices: Vec<usize>,
    /// Where they came from.
    pub source: String,
    /// Mean benign score per denoiser.
    pub mean: Vec<f64>,
    /// Unbiased standard deviation of the benign scores per denoiser.
    pub std: Vec<f64>,
    /// Share of the calibration images the thresholds flag.
    pub calibration_flag_rate: f64,
}

/// Scores of a batch under every denoiser.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    /// `total[i][j]`: score of image `j` under denoiser `i`.
    pub total: Vec<Vec<f32>>,
    /// The class (cross-entropy) parts.
    pub class: Vec<Vec<f32>>,
    /// The vision (MSE) parts.
    pub vision: Vec<Vec<f32>>,
    /// The classifier's prediction on each input.
    pub pred: Vec<usize>,
    /// `probs[i][j * classes + c]`: softmax of the classifier on image `j` denoised by `i`.
    pub probs: Vec<Vec<f32>>,
}

impl Scores {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.pred.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.pred.is_empty()
    }

    /// The scores of the denoisers at `idx` only.
    pub fn select_denoisers(&self, idx: &[usize]) -> Scores {
        Scores {
            total: idx.iter().map(|&i| self.total[i].clone()).collect(),
            class: idx.iter().map(|&i| self.class[i].clone()).collect(),
            vision: idx.iter().map(|&i| self.vision[i].clone()).collect(),
            pred: self.pred.clone(),
            probs: idx.iter().map(|&i| self.probs[i].clone()).collect(),
        }
    }

    /// The scores of images `range` only.
    pub fn select_images(&self, range: std::ops::Range<usize>) -> Scores {
        let classes = if self.pred.is_empty() || self.probs.is_empty() {
            0
        } else {
            self.probs[0].len() / self.pred.len()
        };
        Scores {
            total: self
                .total
                .iter()
                .map(|t| t[range.clone()].to_vec())
                .collect(),
            class: self
                .class
                .iter()
                .map(|t| t[range.clone()].to_vec())
                .collect(),
            vision: self
                .vision
                .iter()
                .map(|t| t[range.clone()].to_vec())
                .collect(),
            pred: self.pred[range.clone()].to_vec(),
            probs: self
                .probs
                .iter()
                .map(|t| t[range.start * classes..range.end * classes].to_vec())
                .collect(),
        }
    }

    /// Appends another batch's scores.
    pub fn extend(&mut self, other: Scores) {
        if self.total.is_empty() {
            *self = other;
            return;
        }
        for i in 0..self.total.len() {
            self.total[i].extend(&other.total[i]);
            self.class[i].extend(&other.class[i]);
            self.vision[i].extend(&other.vision[i]);
            self.probs[i].extend(&other.probs[i]);
        }
        self.pred.extend(other.pred);
    }
}

/// The defender's answer for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The final label.
    pub label: usize,
    /// Whether any score exceeded its threshold.
    pub adversarial: bool,
    /// The undefended classifier's label.
    pub classifier_label: usize,
    /// Score per denoiser.
    pub scores: Vec<f32>,
    /// Indices of the denoisers whose threshold was exceeded.
    pub flagged_by: Vec<usize>,
}

impl Verdict {
    /// Whether the input evades the defender: not flagged, and labelled other than `label` (its
    /// true class).
    pub fn evades(&self, label: usize) -> bool {
        !self.adversarial && self.label != label
    }

    /// The verdict as the defender gives it out under `policy`: the label withheld when a
    /// flagged input is rejected, denoisers named. `defed defend`, `defed serve` and the
    /// reports all show this one shape.
    pub fn answer(&self, policy: Policy, names: &[String]) -> Answer {
        let rejected = self.adversarial && policy == Policy::Reject;
        Answer {
            label: (!rejected).then_some(self.label),
            rejected,
            adversarial: self.adversarial,
            classifier_label: self.classifier_label,
            scores: self.scores.clone(),
            flagged_by: self
                .flagged_by
                .iter()
                .map(|&i| names.get(i).cloned().unwrap_or_else(|| format!("#{i}")))
                .collect(),
        }
    }
}

/// A [`Verdict`] with the bundle's policy applied, as `defend` and `serve` output it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The label given out: `None` when the input is rejected (flagged, `reject` policy);
    /// when flagged under `correct`, the corrected label.
    pub label: Option<usize>,
    /// Flagged and refused (the `reject` policy).
    pub rejected: bool,
    /// Whether any score exceeded its threshold.
    pub adversarial: bool,
    /// The undefended classifier's label.
    pub classifier_label: usize,
    /// Score per denoiser.
    pub scores: Vec<f32>,
    /// Names of the denoisers whose threshold was exceeded.
    pub flagged_by: Vec<String>,
}

/// A classifier guarded by denoisers.
///
/// Build one from a classifier and denoisers (here the embedded defaults), calibrate its
/// thresholds on benign images, keep it as a bundle file and judge inputs:
///
/// ```
/// use defed::defense::{Defender, Policy, ThresholdRule};
///
/// let device = defed::default_device();
/// let mut defender = Defender::embedded(&device)?;
/// // Thresholds: mean + 2 std of each denoiser's score on 30 held-out benign digits.
/// let (_, held_out) = defed::data::embedded_mnist().split(0.1, 0);
/// let calibration = held_out.select(&(0..30).collect::<Vec<_>>());
/// let scores = defender.scores(&calibration.images, &device)?;
/// defender.calibrate(&scores, ThresholdRule::KStd(2.0), (0..30).collect(), "held-out digits")?;
/// defender.policy = Policy::Reject;
///
/// let path = std::env::temp_dir().join(format!("defender-doc-{}.safetensors", std::process::id()));
/// defender.save(&path)?;
/// let bundle = Defender::load(&path, &device)?;
/// # std::fs::remove_file(&path).ok();
/// let names: Vec<String> = bundle.denoisers.iter().map(|d| d.name.clone()).collect();
/// let image = held_out.image(40); // one 1 x 28 x 28 image, flat
/// let verdict = &bundle.defend(image, &device)?[0];
/// let answer = verdict.answer(bundle.policy, &names);
/// // Under `reject` a flagged input gets no label; otherwise the (corrected) label.
/// assert_eq!(answer.label.is_none(), verdict.adversarial);
/// # Ok::<(), defed::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Defender {
    /// The protected classifier.
    pub classifier: Classifier,
    /// The denoisers.
    pub denoisers: Vec<DefenderDenoiser>,
    /// Weight of the class part of the score.
    pub alpha: f32,
    /// Threshold per denoiser, once calibrated.
    pub thresholds: Option<Vec<f32>>,
    /// How they were calibrated.
    pub calibration: Option<Calibration>,
    /// What happens to flagged inputs.
    pub policy: Policy,
}

impl Defender {
    /// A defender without thresholds yet.
    pub fn new(
        classifier: Classifier,
        denoisers: Vec<DefenderDenoiser>,
        alpha: f32,
    ) -> Result<Self> {
        if denoisers.is_empty() {
            return Err(Error::Invalid(
                "a defender needs at least one denoiser".into(),
            ));
        }
        let [c, h, w] = classifier.input_shape();
        for d in &denoisers {
            check_denoiser_input([1, c, h, w], d.net.channels()).map_err(|e| {
                Error::Invalid(format!(
                    "denoiser {} does not fit the classifier: {e}",
                    d.name
                ))
            })?;
        }
        Ok(Defender {
            classifier,
            denoisers,
            alpha,
            thresholds: None,
            calibration: None,
            policy: Policy::default(),
        })
    }

    /// A copy keeping only the denoisers at `idx` (and their thresholds).
    pub fn subset(&self, idx: &[usize]) -> Defender {
        Defender {
            classifier: self.classifier.clone(),
            denoisers: idx.iter().map(|&i| self.denoisers[i].clone()).collect(),
            alpha: self.alpha,
            thresholds: self
                .thresholds
                .as_ref()
                .map(|t| idx.iter().map(|&i| t[i]).collect()),
            calibration: None,
            policy: self.policy,
        }
    }

    /// Image shape `[C, H, W]` the defender takes.
    pub fn input_shape(&self) -> [usize; 3] {
        self.classifier.input_shape()
    }

    /// Scores of a batch (flat `N x C x H x W`) under every denoiser.
    pub fn scores(&self, x: &[f32], device: &Device) -> Result<Scores> {
        let [c, h, w] = self.input_shape();
        let per = c * h * w;
        if x.is_empty() || !x.len().is_multiple_of(per) {
            return Err(Error::Shape(format!(
                "{} values are not a whole number of {c}x{h}x{w} images",
                x.len()
            )));
        }
        crate::data::validate_pixels(x)?;
        let n = x.len() / per;
        let k = self.classifier.num_classes();
        let xt = tensor4(x.to_vec(), [n, c, h, w], device);
        let pred = argmax_rows(&to_vec(self.classifier.logits(xt.clone())), k);
        let target = one_hot(&pred, k, device);
        let mut s = Scores {
            pred,
            ..Scores::default()
        };
        for d in &self.denoisers {
            let t = score_tensors(
                &self.classifier,
                &d.net,
                self.alpha,
                xt.clone(),
                target.clone(),
                Clamp::Exact,
            );
            s.total.push(to_vec(t.total));
            s.class.push(to_vec(t.class));
            s.vision.push(to_vec(t.vision));
            s.probs.push(to_vec(softmax(t.logits, 1)));
        }
        Ok(s)
    }

    /// Scores of many images, in batches.
    pub fn scores_batched(&self, x: &[f32], batch: usize, device: &Device) -> Result<Scores> {
        let per = self.input_shape().iter().product::<usize>();
        let mut all = Scores::default();
        for chunk in x.chunks(batch.max(1) * per) {
            all.extend(self.scores(chunk, device)?);
        }
        Ok(all)
    }

    /// Verdicts from scores, with the calibrated thresholds.
    pub fn decide(&self, s: &Scores) -> Result<Vec<Verdict>> {
        let t = self.thresholds.as_ref().ok_or_else(|| {
            Error::Invalid(
                "the defender is not calibrated (no thresholds): run `defed calibrate`".into(),
            )
        })?;
        Ok(decide_with(s, t, self.classifier.num_classes()))
    }

    /// Scores and verdicts for a batch.
    pub fn defend(&self, x: &[f32], device: &Device) -> Result<Vec<Verdict>> {
        let s = self.scores(x, device)?;
        self.decide(&s)
    }

    /// The denoisers' display names, in order.
    pub fn names(&self) -> Vec<String> {
        self.denoisers.iter().map(|d| d.name.clone()).collect()
    }
}

/// The decision rule for given thresholds.
pub fn decide_with(s: &Scores, thresholds: &[f32], classes: usize) -> Vec<Verdict> {
    (0..s.len())
        .map(|j| {
            let scores: Vec<f32> = s.total.iter().map(|t| t[j]).collect();
            let flagged_by: Vec<usize> = (0..scores.len())
                .filter(|&i| scores[i] > thresholds[i])
                .collect();
            let label = if flagged_by.is_empty() {
                s.pred[j]
            } else {
                let mut sum = vec![0f32; classes];
                for &i in &flagged_by {
                    for (c, v) in sum.iter_mut().enumerate() {
                        *v += s.probs[i][j * classes + c];
                    }
                }
                argmax_rows(&sum, classes)[0]
            };
            Verdict {
                label,
                adversarial: !flagged_by.is_empty(),
                classifier_label: s.pred[j],
                scores,
                flagged_by,
            }
        })
        .collect()
}

/// Mean and unbiased standard deviation.
pub fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n.max(1.0);
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// How thresholds are set from the scores of benign images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdRule {
    /// `mean + k * std` per denoiser (the paper's rule).
    KStd(f64),
    /// At most this share of the benign images flagged overall.
    Fpr(f64),
}

impl std::fmt::Display for ThresholdRule {
    /// `k=2`, `fpr=0.05`: the rule's name in evaluation tables.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThresholdRule::KStd(k) => write!(f, "k={k}"),
            ThresholdRule::Fpr(p) => write!(f, "fpr={p}"),
        }
    }
}

impl ThresholdRule {
    /// The thresholds the rule sets from `benign` scores.
    pub fn thresholds(self, benign: &Scores) -> Vec<f32> {
        match self {
            ThresholdRule::KStd(k) => thresholds_k_std(benign, k),
            ThresholdRule::Fpr(p) => thresholds_fpr(benign, p),
        }
    }
}

impl Defender {
    /// The first `n` images of `benign` that the thresholds were not fitted on (matched by
    /// their indices in the source split): what an evaluation may attack or measure.
    pub fn held_out(
        &self,
        benign: &crate::data::ImageSet,
        n: usize,
    ) -> Result<crate::data::ImageSet> {
        let fitted: std::collections::HashSet<usize> = self
            .calibration
            .as_ref()
            .map(|c| c.image_indices.iter().copied().collect())
            .unwrap_or_default();
        let keep: Vec<usize> = (0..benign.len())
            .filter(|&i| !fitted.contains(&benign.indices.get(i).copied().unwrap_or(usize::MAX)))
            .take(n)
            .collect();
        if keep.is_empty() {
            return Err(Error::Invalid(
                "no benign images left after skipping the bundle's calibration images".into(),
            ));
        }
        Ok(benign.select(&keep))
    }

    /// Sets the thresholds from the scores of benign images (`benign`, of the images
    /// `image_indices` of `source`) under `rule`, and records how. At least two images.
    pub fn calibrate(
        &mut self,
        benign: &Scores,
        rule: ThresholdRule,
        image_indices: Vec<usize>,
        source: impl Into<String>,
    ) -> Result<()> {
        if benign.len() < 2 || benign.total.len() != self.denoisers.len() {
            return Err(Error::Invalid(format!(
                "calibration needs the scores of at least 2 benign images under each of the {} \
                 denoisers",
                self.denoisers.len()
            )));
        }
        let t = rule.thresholds(benign);
        let stats: Vec<(f64, f64)> = benign.total.iter().map(|t| mean_std(t)).collect();
        let (method, k, fpr) = match rule {
            ThresholdRule::KStd(k) => ("k-std", Some(k), None),
            ThresholdRule::Fpr(p) => ("fpr", None, Some(p)),
        };
        self.calibration = Some(Calibration {
            method: method.into(),
            k,
            fpr,
            images: benign.len(),
            image_indices,
            source: source.into(),
            mean: stats.iter().map(|x| x.0).collect(),
            std: stats.iter().map(|x| x.1).collect(),
            calibration_flag_rate: flag_rate(benign, &t),
        });
        self.thresholds = Some(t);
        Ok(())
    }
}

/// Thresholds `mean + k * std` (unbiased std, as the original) per denoiser.
pub fn thresholds_k_std(benign: &Scores, k: f64) -> Vec<f32> {
    benign
        .total
        .iter()
        .map(|t| k_std_threshold(t, k) as f32)
        .collect()
}

/// The k-std rule on one denoiser's benign scores: `mean + k * std`, unbiased std.
pub fn k_std_threshold(scores: &[f32], k: f64) -> f64 {
    let (m, s) = mean_std(scores);
    m + k * s
}

/// Share of images flagged under the thresholds.
pub fn flag_rate(s: &Scores, thresholds: &[f32]) -> f64 {
    let flagged = (0..s.len())
        .filter(|&j| s.total.iter().zip(thresholds).any(|(t, th)| t[j] > *th))
        .count();
    flagged as f64 / s.len().max(1) as f64
}

/// The `q` quantile of `v` (the smallest value at or above that share of them; infinity for
/// none).
pub fn quantile(v: &[f32], q: f64) -> f32 {
    let mut s: Vec<f32> = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f32::INFINITY;
    }
    let pos = (q.clamp(0.0, 1.0) * (s.len() - 1) as f64).ceil() as usize;
    s[pos.min(s.len() - 1)]
}

/// Thresholds at a common per-denoiser quantile, chosen so that the "any" rule flags at most a
/// share `fpr` of the benign calibration images overall.
pub fn thresholds_fpr(benign: &Scores, fpr: f64) -> Vec<f32> {
    let at = |level: f64| -> Vec<f32> {
        benign
            .total
            .iter()
            .map(|t| quantile(t, 1.0 - level))
            .collect()
    };
    // The overall rate grows with the per-denoiser level; bisect the largest level that fits.
    let (mut lo, mut hi) = (0.0f64, fpr.clamp(0.0, 1.0));
    if flag_rate(benign, &at(hi)) <= fpr {
        return at(hi);
    }
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if flag_rate(benign, &at(mid)) <= fpr {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    at(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_skips_the_calibration_images() {
        let device = crate::default_device();
        let mut d = Defender::embedded(&device).unwrap();
        let set = crate::data::embedded_mnist().take(12);
        let calib = set.select(&[0, 1, 2, 5]);
        let s = d.scores(&calib.images, &device).unwrap();
        d.calibrate(&s, ThresholdRule::KStd(2.0), calib.indices.clone(), "test")
            .unwrap();
        let held = d.held_out(&set, 5).unwrap();
        assert_eq!(held.indices, vec![3, 4, 6, 7, 8]);
        // Nothing left: an error, not an empty evaluation.
        assert!(d.held_out(&calib, 10).is_err());
        // Calibration needs two images.
        let one = d.scores(&set.take(1).images, &device).unwrap();
        assert!(
            d.clone()
                .calibrate(&one, ThresholdRule::Fpr(0.01), vec![0], "one")
                .is_err()
        );
    }
}
