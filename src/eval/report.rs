//! The stage-5 evaluation: denoiser sets x threshold rules, benign pass rate and accuracy on
//! held-out benign images, and per attack the detection rate, corrected accuracy, ROC-AUC and
//! TPR at fixed FPR. Scores are computed once per denoiser and image; every set and rule is
//! then decided from them.

use serde::{Deserialize, Serialize};

use super::charts::{
    Figure, Frame, HeatMap, ImageCell, ImageGrid, ImageRow, Legend, LineChart, Panel, Series,
};
use super::detection::{roc_auc, roc_curve, tpr_at_fpr};

use crate::attack::AdvSet;
use crate::backend::Device;
use crate::data::ImageSet;
use crate::defense::{
    Defender, Scores, ThresholdRule, decide_with, flag_rate, k_std_threshold, mean_std, quantile,
};
use crate::error::{Error, Result};

/// Every single denoiser and every pair of `m`, as index sets (`[0], [0, 1], [0, 2], [1], ...`):
/// the denoiser-set grid of the evaluation heat-maps.
pub fn singles_and_pairs(m: usize) -> Vec<Vec<usize>> {
    let mut sets = Vec::new();
    for i in 0..m {
        sets.push(vec![i]);
        for j in i + 1..m {
            sets.push(vec![i, j]);
        }
    }
    sets
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
    pub rules: &'a [ThresholdRule],
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
pub(crate) fn set_label(d: &Defender, set: &[usize]) -> String {
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
pub(crate) fn max_normalized(calib: &Scores, s: &Scores) -> Vec<f64> {
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
            let t = rule.thresholds(&calib);
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

/// How one denoiser's adversarial scores spread over the benign calibration images: what sets
/// its `mean + k * std` threshold. A few digits that the classifier doubts once denoised
/// (digits on its own decision boundary) carry a large class term, and they alone can raise
/// the standard deviation, and so the threshold, far above where most benign scores lie.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSpread {
    /// The denoiser's name.
    pub denoiser: String,
    /// Calibration images.
    pub images: usize,
    /// Median score.
    pub median: f64,
    /// 95th percentile of the scores.
    pub p95: f64,
    /// Largest score.
    pub max: f64,
    /// Mean score (the k-std rule's).
    pub mean: f64,
    /// Unbiased standard deviation of the scores (the k-std rule's).
    pub std: f64,
    /// The k = 2 threshold, `mean + 2 std`.
    pub threshold_k2: f64,
    /// Calibration images whose class term exceeds ln 2: once denoised, the classifier gives
    /// their label less than half its probability (every relabelled image among them).
    pub doubted: usize,
    /// `mean + 2 std` without the highest 1% of the scores (at least one).
    pub threshold_k2_trimmed: f64,
}

/// [`CalibrationSpread`] of every denoiser over the calibration scores `calib`.
pub fn calibration_spread(calib: &Scores, names: &[String]) -> Vec<CalibrationSpread> {
    calib
        .total
        .iter()
        .enumerate()
        .map(|(i, total)| {
            let doubted = calib.class[i]
                .iter()
                .filter(|&&c| c > std::f32::consts::LN_2)
                .count();
            let mut sorted = total.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            let drop = total.len().div_ceil(100).min(total.len().saturating_sub(2));
            let (mean, std) = mean_std(total);
            CalibrationSpread {
                denoiser: names.get(i).cloned().unwrap_or_else(|| format!("#{i}")),
                images: total.len(),
                median: quantile(total, 0.5) as f64,
                p95: quantile(total, 0.95) as f64,
                max: quantile(total, 1.0) as f64,
                mean,
                std,
                threshold_k2: k_std_threshold(total, 2.0),
                doubted,
                threshold_k2_trimmed: k_std_threshold(&sorted[..total.len() - drop], 2.0),
            }
        })
        .collect()
}

/// [`calibration_spread`] as a markdown table.
pub fn calibration_markdown(rows: &[CalibrationSpread]) -> String {
    let mut out = String::from(
        "| denoiser | images | median | 95th percentile | max | mean | std | k = 2 threshold | doubted once denoised (p(label) < 0.5) | k = 2 threshold without the top 1% |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {:.4} |\n",
            r.denoiser,
            r.images,
            r.median,
            r.p95,
            r.max,
            r.mean,
            r.std,
            r.threshold_k2,
            r.doubted,
            r.threshold_k2_trimmed
        );
    }
    out
}

/// A report's section on what sets the k = 2 thresholds: [`calibration_markdown`] with what
/// it shows (empty without calibration data).
pub fn calibration_section(spread: &[CalibrationSpread]) -> String {
    if spread.is_empty() {
        return String::new();
    }
    format!(
        "### What sets the k = 2 thresholds\n\n\
         Each denoiser's adversarial score on the calibration images. A few digits that the classifier doubts once denoised (digits on its own decision boundary) carry a large class term: they alone can lift `mean + 2 std` far above the scores of the other benign digits, and with it the score an attack must reach to be flagged. The last column is the threshold the other calibration digits would set without the highest 1% of the scores (not used: it flags more held-out benign digits).\n\n{}\n",
        calibration_markdown(spread)
    )
}

/// What the evaluation figures are drawn from.
pub struct FigureInput<'a> {
    /// The defender with every denoiser (its thresholds, if any, decide the example verdicts;
    /// else k = 2 fitted on the calibration images).
    pub defender: &'a Defender,
    /// The cached scores.
    pub scores: &'a EvalScores,
    /// The named adversarial sets, in the order of `scores.adv`.
    pub adv_sets: &'a [(String, AdvSet)],
    /// The grid's rows.
    pub evaluation: &'a [EvalRow],
    /// How many benign images calibrate.
    pub calibration: usize,
}

/// The evaluation's figures: ROC curves of the max normalised score per attack (linear and
/// log false-positive axis), detection and final-label accuracy over denoiser sets x attacks
/// for each rule, and one example per attack (benign, adversarial, and the adversarial image
/// denoised by each denoiser) with the defender's verdicts.
pub fn figures(input: &FigureInput<'_>, device: &Device) -> Result<Vec<Figure>> {
    let FigureInput {
        defender,
        scores,
        adv_sets,
        evaluation,
        calibration,
    } = *input;
    let calib = scores.benign.select_images(0..calibration);
    let held = scores
        .benign
        .select_images(calibration..scores.benign.len());
    let held_norm = max_normalized(&calib, &held);
    let mut figures = Vec::new();
    if !held.is_empty() && !adv_sets.is_empty() {
        let curves: Vec<Series> = adv_sets
            .iter()
            .zip(&scores.adv)
            .map(|((name, _), s)| {
                let adv = max_normalized(&calib, s);
                Series::new(
                    format!("{name} (AUC {:.3})", roc_auc(&held_norm, &adv)),
                    roc_curve(&held_norm, &adv),
                )
            })
            .collect();
        let chance = Series::new("chance", vec![(0.0, 0.0), (1.0, 1.0)])
            .dashed()
            .colour(6);
        let mut linear = LineChart::new(
            "ROC: held-out benign vs each attack",
            "false-positive rate (benign flagged)",
            "detection rate (adversarial flagged)",
            curves.clone(),
        );
        linear.series.push(chance);
        linear.x_range = Some((0.0, 1.0));
        linear.y_range = Some((0.0, 1.0));
        linear.legend = Legend::LowerRight;
        let mut log = linear.clone();
        log.title = "ROC, low false-positive end (log scale)".into();
        log.series = curves;
        log.log_x = true;
        let floor = (1.0 / held.len() as f64).min(0.01);
        log.x_range = Some((floor, 1.0));
        figures.push(Figure {
            name: "roc".into(),
            caption: format!(
                "ROC curves of the max normalised score over all denoisers ({} held-out benign images against each attack's adversarial images); right: the same with a logarithmic false-positive axis.",
                held.len()
            ),
            panels: vec![Panel::Line(linear), Panel::Line(log)],
        });
    }
    let mut rules: Vec<&str> = Vec::new();
    for r in evaluation {
        if !rules.contains(&r.rule.as_str()) {
            rules.push(&r.rule);
        }
    }
    for rule in rules {
        let rows: Vec<&EvalRow> = evaluation.iter().filter(|r| r.rule == rule).collect();
        let Some(first) = rows.first() else { continue };
        let attacks: Vec<String> = first.attacks.iter().map(|a| a.attack.clone()).collect();
        let grid = |f: &dyn Fn(&AttackRow) -> f64| -> Vec<Vec<Option<f64>>> {
            (0..attacks.len())
                .map(|i| rows.iter().map(|r| r.attacks.get(i).map(f)).collect())
                .collect()
        };
        let columns: Vec<String> = rows.iter().map(|r| r.set.clone()).collect();
        let heat = |title: &str, values| {
            Panel::Heat(HeatMap {
                title: format!("{title}, rule {rule}"),
                x_label: "denoiser set".into(),
                y_label: "attack".into(),
                columns: columns.clone(),
                rows: attacks.clone(),
                values,
            })
        };
        figures.push(Figure {
            name: format!("detection-{}", file_safe(rule)),
            caption: format!(
                "Left: share of adversarial images flagged; right: share ending with their true label; per denoiser set (columns) and attack (rows), thresholds by the rule {rule}."
            ),
            panels: vec![
                heat("Detected", grid(&|a| a.detection)),
                heat("True label", grid(&|a| a.accuracy)),
            ],
        });
    }
    if let Some(examples) = example_grid(defender, scores, adv_sets, &calib, device)? {
        figures.push(examples);
    }
    Ok(figures)
}

/// A rule or name as a file-name part (`k=2` -> `k2`, `fpr=0.01` -> `fpr0.01`).
fn file_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect()
}

/// One example per attack: benign source, adversarial, and the adversarial image denoised by
/// each denoiser, with the defender's verdicts as frames and labels and scores as captions.
fn example_grid(
    defender: &Defender,
    scores: &EvalScores,
    adv_sets: &[(String, AdvSet)],
    calib: &Scores,
    device: &Device,
) -> Result<Option<Figure>> {
    let t = defender
        .thresholds
        .clone()
        .unwrap_or_else(|| crate::defense::thresholds_k_std(calib, 2.0));
    let classes = defender.classifier.num_classes();
    let mut rows = Vec::new();
    for ((name, set), s) in adv_sets.iter().zip(&scores.adv) {
        if set.benign.is_empty() {
            continue;
        }
        let shape = set.benign.shape;
        let per = set.benign.image_len();
        let src = set.benign.image(0).to_vec();
        let adv = set.adv[..per].to_vec();
        let truth = set.benign.labels[0];
        let bv = decide_with(&defender.scores(&src, device)?, &t, classes).remove(0);
        let av = decide_with(&s.select_images(0..1), &t, classes).remove(0);
        let frame = |v: &crate::defense::Verdict| {
            Some(if v.adversarial {
                Frame::Flag
            } else {
                Frame::Pass
            })
        };
        let verdict = |v: &crate::defense::Verdict| {
            if v.adversarial {
                format!("classifier {}; flagged, {}", v.classifier_label, v.label)
            } else {
                format!("classifier {}; passed", v.classifier_label)
            }
        };
        let mut cells = vec![
            ImageCell {
                shape,
                pixels: src,
                caption: format!("true {truth}, {}", verdict(&bv)),
                frame: frame(&bv),
            },
            ImageCell {
                shape,
                pixels: adv.clone(),
                caption: verdict(&av),
                frame: frame(&av),
            },
        ];
        let x = crate::util::tensor4(adv, [1, shape[0], shape[1], shape[2]], device);
        for (i, d) in defender.denoisers.iter().enumerate() {
            let den = crate::util::to_vec(d.net.forward(x.clone()).clamp(0.0, 1.0));
            let said = s
                .probs
                .get(i)
                .filter(|p| p.len() >= classes)
                .map(|p| crate::util::argmax_rows(&p[..classes], classes)[0].to_string())
                .unwrap_or_else(|| "?".into());
            let score = av.scores.get(i).copied().unwrap_or(f32::NAN);
            cells.push(ImageCell {
                shape,
                pixels: den,
                caption: format!(
                    "says {said}, score {}",
                    crate::eval::charts::short_number(score as f64)
                ),
                frame: None,
            });
        }
        rows.push(ImageRow {
            label: name.clone(),
            cells,
        });
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let mut columns = vec!["benign".to_string(), "adversarial".to_string()];
    columns.extend(
        defender
            .denoisers
            .iter()
            .map(|d| format!("denoised by {}", d.name)),
    );
    Ok(Some(Figure::single(
        "examples",
        "The first adversarial image of each attack beside its benign source and its denoised versions; frames give the verdict of the defender with all denoisers, captions the bare classifier's label and, when flagged, the corrected label; under each denoiser, the classifier's label on the denoised image and the adversarial score.",
        Panel::Images(ImageGrid {
            title: "Examples: one per attack".into(),
            columns,
            rows,
        }),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_spread_shows_what_sets_the_threshold() {
        // Two denoisers, five digits; under denoiser 0 digit 3 keeps a third of its label's
        // probability (class term ln 3) and is the outlier.
        let calib = Scores {
            total: vec![vec![0.1, 0.2, 0.3, 4.0, 0.4], vec![0.5; 5]],
            class: vec![vec![0.01, 0.02, 0.6, 3f32.ln(), 0.03], vec![0.0; 5]],
            vision: vec![vec![0.0; 5]; 2],
            pred: vec![0, 1, 0, 1, 0],
            probs: vec![vec![0.5; 10]; 2],
        };
        let s = calibration_spread(&calib, &["20".into(), "60".into()]);
        assert_eq!(s.len(), 2);
        let (m, sd) = mean_std(&calib.total[0]);
        assert_eq!((s[0].median, s[0].max), (0.3f32 as f64, 4.0));
        assert!((s[0].threshold_k2 - (m + 2.0 * sd)).abs() < 1e-12);
        assert_eq!(s[0].doubted, 1);
        // The top 1% of five scores is one: the outlier.
        let (km, ksd) = mean_std(&[0.1, 0.2, 0.3, 0.4]);
        assert!((s[0].threshold_k2_trimmed - (km + 2.0 * ksd)).abs() < 1e-12);
        assert!(s[0].threshold_k2_trimmed < 0.2 * s[0].threshold_k2);
        assert_eq!(
            (s[1].doubted, s[1].std, s[1].threshold_k2_trimmed),
            (0, 0.0, 0.5)
        );
        assert_eq!(s[1].denoiser, "60");
        let md = calibration_markdown(&s);
        assert_eq!(md.lines().count(), 4, "{md}");
        assert!(md.contains("| 20 | 5 | 0.3000 |"), "{md}");
    }
}
