//! The strong-attack protocol (after AutoAttack, Croce and Hein 2020): APGD-CE, then targeted
//! APGD-DLR over the 9 most likely wrong classes, then Square with 5,000 queries (Linf only),
//! each on the images the previous ones left correctly classified. The figure it reports is
//! robust accuracy: the share of images no attack broke.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Apgd, Attack, AttackModel, Norm, Square, gather_images};
use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::util::{row, row_mut};

/// One stage of the protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrongStage {
    /// The attack.
    pub attack: String,
    /// Images it was run on (those still robust).
    pub attempted: usize,
    /// Images it broke.
    pub broken: usize,
    /// Robust accuracy after it.
    pub robust_accuracy: f64,
    /// Wall time.
    pub seconds: f64,
}

/// What the protocol found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrongReport {
    /// Threat model.
    pub norm: Norm,
    /// Budget.
    pub eps: f32,
    /// Images evaluated.
    pub images: usize,
    /// Share classified correctly without attack.
    pub clean_accuracy: f64,
    /// Share still classified correctly after every attack.
    pub robust_accuracy: f64,
    /// Each stage in order.
    pub stages: Vec<StrongStage>,
    /// Per image: the adversarial example that broke it, else the clean image.
    #[serde(skip, default)]
    pub adv: Vec<f32>,
    /// Per image: whether it was misclassified (clean or attacked).
    #[serde(skip, default)]
    pub broken: Vec<bool>,
    /// Per image: the stage that broke it (1-based; 0 when the clean image was already
    /// misclassified), `None` when it stayed robust.
    #[serde(skip, default)]
    pub broken_at: Vec<Option<usize>>,
    /// Per image: the classifier's label on [`StrongReport::adv`].
    #[serde(skip, default)]
    pub final_label: Vec<usize>,
}

/// How hard the protocol's attacks try. The default is AutoAttack's standard version: APGD
/// with 100 iterations and one run (for APGD-T, per target class), Square with 5,000 queries.
/// More iterations or restarts show whether the figure has converged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrongSettings {
    /// APGD iterations per run.
    pub iterations: usize,
    /// APGD runs (the first from the clean image, the others from random points of the ball).
    pub restarts: usize,
    /// Square's queries (Linf only; 0 leaves Square out).
    pub square_queries: usize,
}

impl Default for StrongSettings {
    fn default() -> Self {
        StrongSettings {
            iterations: 100,
            restarts: 1,
            square_queries: 5000,
        }
    }
}

/// The attacks of the protocol for a norm and budget.
pub fn strong_attacks(norm: Norm, eps: f32, settings: StrongSettings) -> Vec<Box<dyn Attack>> {
    let tune = |mut a: Apgd| {
        a.config.iterations = settings.iterations.max(1);
        a.config.restarts = settings.restarts.max(1);
        a
    };
    let mut v: Vec<Box<dyn Attack>> = vec![
        Box::new(tune(Apgd::ce(norm, eps))),
        Box::new(tune(Apgd::dlr_targeted(norm, eps))),
    ];
    if norm == Norm::Linf && settings.square_queries > 0 {
        v.push(Box::new(Square {
            iterations: settings.square_queries,
            ..Square::new(eps)
        }));
    }
    v
}

/// Strong-suite reports as CSV (`strong.csv` of `defed attack --suite strong`), one row per
/// budget and stage.
pub fn strong_csv(reports: &[StrongReport]) -> String {
    let mut csv = String::from(
        "norm,eps,images,clean_accuracy,robust_accuracy,stage,attack,attempted,broken,robust_after,seconds\n",
    );
    for r in reports {
        for (i, s) in r.stages.iter().enumerate() {
            csv += &format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                r.norm.name(),
                r.eps,
                r.images,
                r.clean_accuracy,
                r.robust_accuracy,
                i + 1,
                s.attack,
                s.attempted,
                s.broken,
                s.robust_accuracy,
                s.seconds
            );
        }
    }
    csv
}

/// Runs `attacks` in turn on the images still correctly classified.
pub fn strong_protocol(
    model: &AttackModel,
    set: &ImageSet,
    attacks: &[Box<dyn Attack>],
    batch_size: usize,
    seed: u64,
) -> Result<StrongReport> {
    if set.is_empty() {
        return Err(Error::Invalid("no images to attack".into()));
    }
    let per = model.image_len();
    let n = set.len();
    let mut adv = set.images.clone();
    let pred = model.predict(&set.images);
    let mut broken: Vec<bool> = pred.iter().zip(&set.labels).map(|(p, y)| p != y).collect();
    let mut broken_at: Vec<Option<usize>> = broken.iter().map(|&b| b.then_some(0)).collect();
    let mut final_label = pred;
    let clean_accuracy = broken.iter().filter(|b| !**b).count() as f64 / n as f64;
    let mut stages = Vec::new();
    let (norm, eps) = attacks
        .first()
        .map(|a| (a.norm(), a.eps().unwrap_or(0.0)))
        .unwrap_or((Norm::Linf, 0.0));
    for (s, attack) in attacks.iter().enumerate() {
        let todo: Vec<usize> = (0..n).filter(|&i| !broken[i]).collect();
        let t0 = Instant::now();
        let mut newly = 0;
        for (b, chunk) in todo.chunks(batch_size.max(1)).enumerate() {
            let x = gather_images(&set.images, chunk, per);
            let y: Vec<usize> = chunk.iter().map(|&i| set.labels[i]).collect();
            let a = attack.perturb(
                model,
                &x,
                &y,
                None,
                seed.wrapping_add((s * 100_003 + b) as u64),
            )?;
            let p = model.predict(&a);
            for (r, &i) in chunk.iter().enumerate() {
                if p[r] != y[r] {
                    broken[i] = true;
                    broken_at[i] = Some(s + 1);
                    final_label[i] = p[r];
                    newly += 1;
                    row_mut(&mut adv, i, per).copy_from_slice(row(&a, r, per));
                }
            }
        }
        let robust = broken.iter().filter(|b| !**b).count() as f64 / n as f64;
        tracing::info!(
            attack = attack.name(),
            broken = newly,
            robust_accuracy = robust,
            "strong protocol stage"
        );
        stages.push(StrongStage {
            attack: attack.name(),
            attempted: todo.len(),
            broken: newly,
            robust_accuracy: robust,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(StrongReport {
        norm,
        eps,
        images: n,
        clean_accuracy,
        robust_accuracy: broken.iter().filter(|b| !**b).count() as f64 / n as f64,
        stages,
        adv,
        broken,
        broken_at,
        final_label,
    })
}

/// One line per image and budget of strong-suite runs on `set`: its index in the source split
/// (its position in `set` when the set does not know it), true label, final label, the stage
/// that broke it (`0`: misclassified clean; empty: robust) and the size of its final
/// perturbation in the budget's norm. Joined on `index` with `defed evaluate --adaptive`'s
/// `adaptive-images.csv`, it shows which images a defender saves or loses.
pub fn strong_images_csv(reports: &[StrongReport], set: &ImageSet) -> String {
    let mut s = String::from("norm,eps,index,label,final_label,broken_at,perturbation\n");
    let per = set.image_len();
    for r in reports {
        for i in 0..r.broken_at.len().min(set.len()) {
            let d: Vec<f32> = row(&r.adv, i, per)
                .iter()
                .zip(set.image(i))
                .map(|(a, b)| a - b)
                .collect();
            s += &format!(
                "{},{},{},{},{},{},{}\n",
                r.norm.name(),
                r.eps,
                set.source_index(i),
                set.labels[i],
                r.final_label[i],
                r.broken_at[i].map(|b| b.to_string()).unwrap_or_default(),
                r.norm.of(&d)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings reach the attacks, and the names say so when they are not the default.
    #[test]
    fn settings_reach_the_attacks() {
        let names = |s| -> Vec<String> {
            strong_attacks(Norm::Linf, 0.3, s)
                .iter()
                .map(|a| a.name())
                .collect()
        };
        assert_eq!(
            names(StrongSettings::default()),
            [
                "APGD-CE-Linf eps=0.3",
                "APGD-DLR-T-Linf eps=0.3",
                "Square-Linf eps=0.3"
            ]
        );
        let harder = StrongSettings {
            iterations: 200,
            restarts: 3,
            square_queries: 0,
        };
        assert_eq!(
            names(harder),
            [
                "APGD-CE-Linf eps=0.3 (200 it., 3 runs)",
                "APGD-DLR-T-Linf eps=0.3 (200 it., 3 runs)"
            ]
        );
        let l2 = strong_attacks(Norm::L2, 2.0, StrongSettings::default());
        assert_eq!(l2.len(), 2, "Square is Linf only");
    }
}
