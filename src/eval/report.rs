//! The stage-5 evaluation: denoiser sets x threshold rules, benign pass rate and accuracy on
//! held-out benign images, and per attack the detection rate, corrected accuracy, ROC-AUC and
//! TPR at fixed FPR. Scores are computed once per denoiser and image; every set and rule is
//! then decided from them.

use serde::{Deserialize, Serialize};

use super::detection::{roc_auc, tpr_at_fpr};
use std::path::Path;

use crate::attack::AdvSet;
use crate::backend::Device;
use crate::data::ImageSet;
use crate::defense::{
    Defender, Scores, decide_with, flag_rate, mean_std, thresholds_fpr, thresholds_k_std,
};
use crate::error::{Error, Result};

/// A threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    /// `mean + k * std` of the benign calibration scores.
    KStd(f64),
    /// Quantiles flagging at most this share of benign calibration images.
    Fpr(f64),
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::KStd(k) => write!(f, "k={k}"),
            Rule::Fpr(p) => write!(f, "fpr={p}"),
        }
    }
}

/// Thresholds for a rule.
pub fn thresholds(calib: &Scores, rule: Rule) -> Vec<f32> {
    match rule {
        Rule::KStd(k) => thresholds_k_std(calib, k),
        Rule::Fpr(p) => thresholds_fpr(calib, p),
    }
}

/// Figures for one attack under one set and rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttackRow {
    /// The attack's name.
    pub attack: String,
    /// Adversarial examples evaluated.
    pub images: usize,
    /// Share flagged as adversarial.
    pub detection: f64,
    /// Share whose final label is the true label.
    pub accuracy: f64,
    /// ROC-AUC of the max normalised score, adversarial vs held-out benign.
    pub auc: f64,
    /// TPR at 1% FPR of the max normalised score.
    pub tpr_at_1: f64,
    /// TPR at 5% FPR.
    pub tpr_at_5: f64,
}

/// Figures for one denoiser set and rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRow {
    /// The set, as noise levels or names (`20,60,100`).
    pub set: String,
    /// The rule.
    pub rule: String,
    /// Thresholds per denoiser of the set.
    pub thresholds: Vec<f32>,
    /// Held-out benign images.
    pub benign_images: usize,
    /// Share of held-out benign images not flagged.
    pub benign_pass: f64,
    /// Share of held-out benign images whose final label is right.
    pub benign_accuracy: f64,
    /// Per attack.
    pub attacks: Vec<AttackRow>,
}

/// Everything an evaluation needs.
pub struct EvalInput<'a> {
    /// A defender holding every denoiser any set uses.
    pub defender: &'a Defender,
    /// Benign images (the first `calibration` calibrate, the rest evaluate).
    pub benign: &'a ImageSet,
    /// How many benign images calibrate.
    pub calibration: usize,
    /// Evaluate on the calibration images too (the original's protocol).
    pub allow_overlap: bool,
    /// Named adversarial sets.
    pub adv: &'a [(String, AdvSet)],
    /// Denoiser sets, as indices into the defender's denoisers.
    pub sets: &'a [Vec<usize>],
    /// Threshold rules.
    pub rules: &'a [Rule],
    /// Images per batch.
    pub batch_size: usize,
}

/// The cached scores of an evaluation.
pub struct EvalScores {
    /// Benign scores, every denoiser.
    pub benign: Scores,
    /// Per adversarial set.
    pub adv: Vec<Scores>,
}

/// Computes every denoiser's scores on every image once.
pub fn compute_scores(input: &EvalInput<'_>, device: &Device) -> Result<EvalScores> {
    let d = input.defender;
    let benign = d.scores_batched(&input.benign.images, input.batch_size, device)?;
    let mut adv = Vec::new();
    for (name, set) in input.adv {
        if set.benign.shape != input.benign.shape {
            return Err(Error::Shape(format!(
                "adversarial set {name} has images of another shape"
            )));
        }
        adv.push(d.scores_batched(&set.adv, input.batch_size, device)?);
    }
    Ok(EvalScores { benign, adv })
}

/// The set's label (noise levels when every denoiser has one).
pub fn set_label(d: &Defender, set: &[usize]) -> String {
    set.iter()
        .map(|&i| match d.denoisers[i].meta.noise {
            Some(n)
                if d.denoisers
                    .iter()
                    .filter(|x| x.meta.noise == Some(n))
                    .count()
                    == 1 =>
            {
                format!("{n}")
            }
            _ => d.denoisers[i].name.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Per image, the largest score normalised by the calibration mean and std of its denoiser.
pub fn max_normalized(calib: &Scores, s: &Scores) -> Vec<f64> {
    let stats: Vec<(f64, f64)> = calib.total.iter().map(|t| mean_std(t)).collect();
    (0..s.len())
        .map(|j| {
            s.total
                .iter()
                .zip(&stats)
                .map(|(t, (m, sd))| (t[j] as f64 - m) / sd.max(1e-12))
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect()
}

/// Runs the evaluation grid.
pub fn evaluate(input: &EvalInput<'_>, scores: &EvalScores) -> Result<Vec<EvalRow>> {
    let n = input.benign.len();
    if input.calibration == 0 || input.calibration > n {
        return Err(Error::Invalid(format!(
            "calibration needs between 1 and {n} benign images, got {}",
            input.calibration
        )));
    }
    let eval_range = if input.calibration == n {
        if !input.allow_overlap {
            return Err(Error::Invalid(
                "every benign image is used for calibration, so none is left to evaluate on; calibrate on fewer, or pass --allow-overlap to evaluate on the calibration images (the original's protocol)".into(),
            ));
        }
        0..n
    } else if input.allow_overlap {
        0..n
    } else {
        input.calibration..n
    };
    let calib_all = scores.benign.select_images(0..input.calibration);
    let held_all = scores.benign.select_images(eval_range.clone());
    let held_labels = &input.benign.labels[eval_range];
    let classes = input.defender.classifier.num_classes();
    let mut rows = Vec::new();
    for set in input.sets {
        let calib = calib_all.select_denoisers(set);
        let held = held_all.select_denoisers(set);
        let norm_max = |s: &Scores| max_normalized(&calib, s);
        let held_norm = norm_max(&held);
        for &rule in input.rules {
            let t = thresholds(&calib, rule);
            let v = decide_with(&held, &t, classes);
            let benign_pass = 1.0 - flag_rate(&held, &t);
            let benign_accuracy = v
                .iter()
                .zip(held_labels)
                .filter(|(v, l)| v.label == **l)
                .count() as f64
                / v.len().max(1) as f64;
            let mut attacks = Vec::new();
            for ((name, set_adv), s) in input.adv.iter().zip(&scores.adv) {
                let s = s.select_denoisers(set);
                let va = decide_with(&s, &t, classes);
                let m = va.len().max(1) as f64;
                let adv_norm = norm_max(&s);
                attacks.push(AttackRow {
                    attack: name.clone(),
                    images: va.len(),
                    detection: va.iter().filter(|v| v.adversarial).count() as f64 / m,
                    accuracy: va
                        .iter()
                        .zip(&set_adv.benign.labels)
                        .filter(|(v, l)| v.label == **l)
                        .count() as f64
                        / m,
                    auc: roc_auc(&held_norm, &adv_norm),
                    tpr_at_1: tpr_at_fpr(&held_norm, &adv_norm, 0.01),
                    tpr_at_5: tpr_at_fpr(&held_norm, &adv_norm, 0.05),
                });
            }
            rows.push(EvalRow {
                set: set_label(input.defender, set),
                rule: rule.to_string(),
                thresholds: t,
                benign_images: held.len(),
                benign_pass,
                benign_accuracy,
                attacks,
            });
        }
    }
    Ok(rows)
}

/// The results as CSV: one row per set and rule, columns per attack (as the original).
pub fn to_csv(rows: &[EvalRow]) -> String {
    let mut out = String::from("set,rule,benign_images,benign_pass,benign_accuracy");
    if let Some(r) = rows.first() {
        for a in &r.attacks {
            let n = a.attack.replace(',', ";");
            out += &format!(",{n} detection,{n} accuracy,{n} auc,{n} tpr@1%fpr,{n} tpr@5%fpr");
        }
    }
    out.push('\n');
    for r in rows {
        out += &format!(
            "\"{}\",{},{},{:.4},{:.4}",
            r.set, r.rule, r.benign_images, r.benign_pass, r.benign_accuracy
        );
        for a in &r.attacks {
            out += &format!(
                ",{:.4},{:.4},{:.4},{:.4},{:.4}",
                a.detection, a.accuracy, a.auc, a.tpr_at_1, a.tpr_at_5
            );
        }
        out.push('\n');
    }
    out
}

/// A Markdown table of the results.
pub fn to_markdown(rows: &[EvalRow]) -> String {
    let mut out = String::new();
    let Some(first) = rows.first() else {
        return out;
    };
    out += "| set | rule | benign pass | benign acc |";
    for a in &first.attacks {
        out += &format!(" {} detected / acc / AUC |", a.attack);
    }
    out += "\n|---|---|---|---|";
    for _ in &first.attacks {
        out += "---|";
    }
    out.push('\n');
    for r in rows {
        out += &format!(
            "| {} | {} | {:.1}% | {:.1}% |",
            r.set,
            r.rule,
            100.0 * r.benign_pass,
            100.0 * r.benign_accuracy
        );
        for a in &r.attacks {
            out += &format!(
                " {:.1}% / {:.1}% / {:.3} |",
                100.0 * a.detection,
                100.0 * a.accuracy,
                a.auc
            );
        }
        out.push('\n');
    }
    out
}

/// Writes `roc.png` (all denoisers), `heatmap.png` (mean detection at k = 2, or the first rule,
/// per single denoiser and pair) and `examples.png` (verdicts with the defender's thresholds, or
/// k = 2 ones fitted on the calibration images).
#[allow(clippy::too_many_arguments)]
pub fn figures(
    out: &Path,
    defender: &Defender,
    scores: &EvalScores,
    adv_sets: &[(String, AdvSet)],
    evaluation: &[EvalRow],
    sets: &[Vec<usize>],
    calibration: usize,
    benign: &crate::data::ImageSet,
    device: &crate::backend::Device,
) -> Result<()> {
    use crate::eval::detection::roc_curve;
    use crate::eval::plots::{examples_png, heatmap_png, roc_png};
    let m = defender.denoisers.len();
    let calib = scores.benign.select_images(0..calibration);
    let held = scores
        .benign
        .select_images(calibration..scores.benign.len());
    let held_norm = max_normalized(&calib, &held);
    let curves: Vec<(String, Vec<(f64, f64)>)> = adv_sets
        .iter()
        .zip(&scores.adv)
        .map(|((name, _), s)| {
            (
                name.clone(),
                roc_curve(&held_norm, &max_normalized(&calib, s)),
            )
        })
        .collect();
    roc_png(&curves, &out.join("roc.png"))?;
    // Mean detection over attacks at k = 2, per single denoiser (diagonal) and pair.
    let mut grid = vec![vec![None; m]; m];
    let per_set = (evaluation.len() / sets.len().max(1)).max(1);
    for (set, row) in sets.iter().zip(evaluation.chunks(per_set)) {
        let Some(r) = row.iter().find(|r| r.rule == "k=2") else {
            continue;
        };
        let det =
            r.attacks.iter().map(|a| a.detection).sum::<f64>() / r.attacks.len().max(1) as f64;
        match set.as_slice() {
            [i] => grid[*i][*i] = Some(det),
            [i, j] => {
                grid[*i][*j] = Some(det);
                grid[*j][*i] = Some(det);
            }
            _ => {}
        }
    }
    heatmap_png(&grid, &out.join("heatmap.png"))?;
    // Two examples per attack: benign source, adversarial, and the adversarial denoised by the
    // first denoiser; frames show the k = 2 verdicts of the all-denoiser defender.
    let t = defender
        .thresholds
        .clone()
        .unwrap_or_else(|| crate::defense::thresholds_k_std(&calib, 2.0));
    let classes = defender.classifier.num_classes();
    let per = benign.image_len();
    let mut rows = Vec::new();
    for ((_, set), s) in adv_sets.iter().zip(&scores.adv) {
        let v = crate::defense::decide_with(s, &t, classes);
        for (k, verdict) in v.iter().enumerate().take(set.src_idx.len().min(2)) {
            let src = set.benign.image(k).to_vec();
            let adv = set.adv[k * per..(k + 1) * per].to_vec();
            let bs = defender.scores(&src, device)?;
            let bv = crate::defense::decide_with(&bs, &t, classes);
            let den = crate::util::to_vec(
                defender.denoisers[0]
                    .net
                    .forward(crate::util::tensor4(
                        adv.clone(),
                        [1, benign.shape[0], benign.shape[1], benign.shape[2]],
                        device,
                    ))
                    .clamp(0.0, 1.0),
            );
            rows.push((src, adv, den, bv[0].adversarial, verdict.adversarial));
        }
    }
    examples_png(&rows, benign.shape, &out.join("examples.png"))
}
