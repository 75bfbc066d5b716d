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
}

/// The attacks of the protocol for a norm and budget (`square_queries` 0 leaves Square out).
pub fn strong_attacks(norm: Norm, eps: f32, square_queries: usize) -> Vec<Box<dyn Attack>> {
    let mut v: Vec<Box<dyn Attack>> = vec![
        Box::new(Apgd::ce(norm, eps)),
        Box::new(Apgd::dlr_targeted(norm, eps)),
    ];
    if norm == Norm::Linf && square_queries > 0 {
        v.push(Box::new(Square {
            iterations: square_queries,
            ..Square::new(eps)
        }));
    }
    v
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
    })
}
