//! `defed evaluate --adaptive`: the adaptive attack on a calibrated defender at several
//! budgets, beside the transfer of a non-adaptive PGD attack on the bare classifier at the
//! same budget.

use serde::{Deserialize, Serialize};

use crate::attack::{
    AdaptiveConfig, AdaptiveReport, Attack, AttackModel, Norm, adaptive::outcome_shares,
    adaptive_attack_from,
};
use crate::backend::Device;
use crate::data::ImageSet;
use crate::defense::{Defender, Verdict};
use crate::error::{Error, Result};

/// One budget's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdaptiveRow {
    /// The adaptive attack.
    #[serde(flatten)]
    pub adaptive: AdaptiveReport,
    /// Non-adaptive PGD on the classifier, judged by the defender: wrong label and no flag.
    pub transfer_evade_success: f64,
    /// Non-adaptive PGD: share flagged.
    pub transfer_flagged: f64,
    /// Non-adaptive PGD: share with a wrong final label.
    pub transfer_wrong_label: f64,
    /// Robust accuracy under `reject`, image by image the worst case of the adaptive attack
    /// and the transfer: an image counts as defended only when neither evades with it. `None`
    /// in rows recorded before the transfer's per-image verdicts were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_robust_accuracy_reject: Option<f64>,
    /// The same under `correct`: defended only when both end with the true label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_robust_accuracy_correct: Option<f64>,
    /// The defender's verdict on each transfer example.
    #[serde(skip)]
    pub transfer_verdicts: Vec<Verdict>,
}

impl AdaptiveRow {
    /// Robust accuracy under `reject` and under `correct`: the per-image worst case of the
    /// adaptive attack and the transfer where known, else the adaptive attack's.
    pub fn robust_accuracy(&self) -> (f64, f64) {
        (
            self.worst_robust_accuracy_reject
                .unwrap_or(self.adaptive.robust_accuracy_reject),
            self.worst_robust_accuracy_correct
                .unwrap_or(self.adaptive.robust_accuracy_correct),
        )
    }

    /// The row of an adaptive attack and the defender's verdicts on the transfer examples of
    /// the same images (`labels` their true labels).
    pub fn new(
        adaptive: AdaptiveReport,
        transfer_verdicts: Vec<Verdict>,
        labels: &[usize],
    ) -> Result<Self> {
        if adaptive.verdicts.len() != labels.len() || transfer_verdicts.len() != labels.len() {
            return Err(Error::Shape(format!(
                "{} adaptive and {} transfer verdicts for {} images",
                adaptive.verdicts.len(),
                transfer_verdicts.len(),
                labels.len()
            )));
        }
        let (evade, flagged, wrong) = outcome_shares(&transfer_verdicts, labels);
        let n = labels.len().max(1) as f64;
        let both = |ok: &dyn Fn(&Verdict, usize) -> bool| {
            let each = adaptive.verdicts.iter().zip(&transfer_verdicts).zip(labels);
            each.filter(|((a, t), y)| ok(a, **y) && ok(t, **y)).count() as f64 / n
        };
        Ok(Self {
            worst_robust_accuracy_reject: Some(both(&|v, y| !v.evades(y))),
            worst_robust_accuracy_correct: Some(both(&|v, y| v.label == y)),
            transfer_evade_success: evade,
            transfer_flagged: flagged,
            transfer_wrong_label: wrong,
            transfer_verdicts,
            adaptive,
        })
    }
}

/// The MNIST budgets: Linf 0.1, 0.2, 0.3 and L2 1, 2, 3.
pub fn default_budgets() -> Vec<(Norm, f32)> {
    vec![
        (Norm::Linf, 0.1),
        (Norm::Linf, 0.2),
        (Norm::Linf, 0.3),
        (Norm::L2, 1.0),
        (Norm::L2, 2.0),
        (Norm::L2, 3.0),
    ]
}

/// Runs every budget; `template` gives the attack's settings other than norm and budget.
pub fn evaluate_adaptive(
    defender: &Defender,
    set: &ImageSet,
    budgets: &[(Norm, f32)],
    template: &AdaptiveConfig,
    device: &Device,
    mut on_row: impl FnMut(&AdaptiveRow),
) -> Result<Vec<AdaptiveRow>> {
    let model = AttackModel::new(&defender.classifier, device);
    let mut rows = Vec::new();
    for &(norm, eps) in budgets {
        let cfg = AdaptiveConfig {
            norm,
            eps,
            ..template.clone()
        };
        let pgd = crate::attack::transfer_pgd(norm, eps);
        let mut adv = Vec::with_capacity(set.images.len());
        let per = set.image_len();
        let bs = template.batch_size.max(1);
        for (b, chunk) in set.images.chunks(bs * per).enumerate() {
            let labels = &set.labels[b * bs..b * bs + chunk.len() / per];
            adv.extend(pgd.perturb(&model, chunk, labels, None, template.seed)?);
        }
        let starts = cfg.from_transfer.then_some(adv.as_slice());
        let adaptive = adaptive_attack_from(defender, set, starts, &cfg, device)?;
        let verdicts = defender.decide(&defender.scores_batched(&adv, bs, device)?)?;
        let row = AdaptiveRow::new(adaptive, verdicts, &set.labels)?;
        on_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The rows as CSV.
pub fn adaptive_csv(rows: &[AdaptiveRow]) -> String {
    let mut s = String::from(
        "norm,eps,images,evade_success,flagged,wrong_label,robust_accuracy_reject,robust_accuracy_correct,policy,transfer_evade_success,transfer_flagged,transfer_wrong_label,max_perturbation,seconds,clean_pass,clean_accuracy,worst_robust_accuracy_reject,worst_robust_accuracy_correct\n",
    );
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in rows {
        let a = &r.adaptive;
        s += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            a.norm.name(),
            a.eps,
            a.images,
            a.evade_success,
            a.flagged,
            a.wrong_label,
            a.robust_accuracy_reject,
            a.robust_accuracy_correct,
            a.policy,
            r.transfer_evade_success,
            r.transfer_flagged,
            r.transfer_wrong_label,
            a.max_perturbation,
            a.seconds,
            a.clean_pass,
            a.clean_accuracy,
            opt(r.worst_robust_accuracy_reject),
            opt(r.worst_robust_accuracy_correct)
        );
    }
    s
}

/// One line per attacked image and budget: its index in the source split (its position in
/// `set` when the set does not know it), true label, final label, whether it was flagged,
/// whether it evaded (wrong label and no flag), the perturbation's size in the budget's norm,
/// and the transfer example's final label, flag and evasion (empty in rows without them). An
/// image is broken by a set of runs when any of them evades with it, so the worst case over
/// several attack configurations is a join of these files on `index`.
pub fn adaptive_images_csv(rows: &[AdaptiveRow], set: &ImageSet) -> String {
    let mut s = String::from(
        "norm,eps,index,label,final_label,flagged,evaded,perturbation,transfer_final_label,transfer_flagged,transfer_evaded\n",
    );
    for r in rows {
        let a = &r.adaptive;
        let each = a.verdicts.iter().zip(&set.labels).zip(&a.perturbations);
        for (i, ((v, &y), p)) in each.enumerate() {
            let t = r.transfer_verdicts.get(i).map_or_else(
                || ",,".to_string(),
                |t| {
                    format!(
                        "{},{},{}",
                        t.label,
                        u8::from(t.adversarial),
                        u8::from(t.evades(y))
                    )
                },
            );
            s += &format!(
                "{},{},{},{},{},{},{},{},{t}\n",
                a.norm.name(),
                a.eps,
                set.source_index(i),
                y,
                v.label,
                u8::from(v.adversarial),
                u8::from(v.evades(y)),
                p
            );
        }
    }
    s
}

/// The rows as a Markdown section with the threat model.
pub fn adaptive_markdown(rows: &[AdaptiveRow], title: &str, cfg: &AdaptiveConfig) -> String {
    let mut s = format!(
        "## Adaptive attack: {title}\n\n\
         Threat model: white-box. The attacker knows the classifier, every denoiser, alpha, the \
         rule and the thresholds, and uses exact gradients through all of them{ste}. Goal 1 \
         (evade): a wrong label with no flag, by APGD on the classifier margin minus lambda x \
         the threshold excess (lambda in {lambdas:?}, margin {m}% of each threshold){tg}. Goal 2 \
         (corrupt): be flagged with a wrong corrected label. {it} iterations, {re} restart(s) \
         per run{ft}. \"Transfer\" is PGD on the bare classifier at the same budget, judged by the \
         defender (the non-adaptive protocol). Robust accuracy counts an image as defended when \
         it ends with its true label, or, under the reject policy, when it is flagged; \
         \"worst case\" counts it only when both the adaptive attack and the transfer leave it \
         defended.\n\n\
         | norm | eps | images | adaptive: evade (wrong, no flag) | flagged | wrong label | robust acc. (reject) | robust acc. (correct) | transfer: evade | transfer: flagged | transfer: wrong label | worst case (reject) | worst case (correct) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        ste = if cfg.straight_through {
            " (identity gradient through the output clamp)"
        } else {
            ""
        },
        lambdas = cfg.lambdas,
        ft = if cfg.from_transfer {
            "; the untargeted evade and the corrupt runs are made again from the transfer \
             examples on the images the runs from the clean images leave"
        } else {
            ""
        },
        tg = if cfg.targets > 0 {
            format!(
                "; then targeted at each of the {} wrong classes ranked highest on the clean image \
                 (the scores' class term against the target)",
                cfg.targets
            )
        } else {
            String::new()
        },
        m = cfg.margin * 100.0,
        it = cfg.iterations,
        re = cfg.restarts,
    );
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    if let Some(r) = rows.first() {
        s = s.replace(
            "| norm | eps |",
            &format!(
                "Unperturbed, the defender passes {} of these images unflagged ({} unflagged with their true label).\n\n| norm | eps |",
                pct(r.adaptive.clean_pass),
                pct(r.adaptive.clean_accuracy)
            ),
        );
    }
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), pct);
    for r in rows {
        let a = &r.adaptive;
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            a.norm.name(),
            a.eps,
            a.images,
            pct(a.evade_success),
            pct(a.flagged),
            pct(a.wrong_label),
            pct(a.robust_accuracy_reject),
            pct(a.robust_accuracy_correct),
            pct(r.transfer_evade_success),
            pct(r.transfer_flagged),
            pct(r.transfer_wrong_label),
            opt(r.worst_robust_accuracy_reject),
            opt(r.worst_robust_accuracy_correct),
        );
    }
    s
}
