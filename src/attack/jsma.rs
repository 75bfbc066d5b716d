//! Jacobian-based Saliency Map Attack (Papernot et al., 2016), in the simplified form IBM ART
//! uses: each step raises the two pixels with the largest gradient of the target class by
//! `theta`, until the target is reached or a share `gamma` of the pixels is used up.

use rand::{RngExt, SeedableRng, rngs::StdRng};

use super::{Attack, AttackModel, LossKind, Norm, gather_images};
use crate::error::{Error, Result};
use crate::util::row;

/// JSMA, targeted; without targets, a random class other than the true one (seeded).
#[derive(Debug, Clone)]
pub struct Jsma {
    /// Change of a selected pixel per step (positive: brighten).
    pub theta: f32,
    /// Largest share of pixels that may change.
    pub gamma: f32,
}

impl Default for Jsma {
    fn default() -> Self {
        Jsma {
            theta: 0.1,
            gamma: 1.0,
        }
    }
}

impl Attack for Jsma {
    fn name(&self) -> String {
        "JSMA".into()
    }
    fn norm(&self) -> Norm {
        Norm::L0
    }
    fn supports_targets(&self) -> bool {
        true
    }
    fn eps(&self) -> Option<f32> {
        None
    }
    fn perturb(
        &self,
        model: &AttackModel,
        x: &[f32],
        labels: &[usize],
        targets: Option<&[usize]>,
        seed: u64,
    ) -> Result<Vec<f32>> {
        if self.theta == 0.0 || !(0.0..=1.0).contains(&self.gamma) {
            return Err(Error::Invalid(
                "JSMA needs theta != 0 and gamma in [0, 1]".into(),
            ));
        }
        let per = model.image_len();
        let n = labels.len();
        let classes = model.classes();
        let mut rng = StdRng::seed_from_u64(seed);
        let target: Vec<usize> = match targets {
            Some(t) => t.to_vec(),
            None => labels
                .iter()
                .map(|&l| (l + 1 + rng.random_range(0..classes - 1)) % classes)
                .collect(),
        };
        let up = self.theta > 0.0;
        let mut adv = x.to_vec();
        // Pixels still allowed to move in the attack's direction.
        let mut space: Vec<bool> = adv
            .iter()
            .map(|&v| if up { v < 1.0 } else { v > 0.0 })
            .collect();
        // Distinct pixels changed so far, and the most allowed.
        let budget = (self.gamma * per as f32).floor() as usize;
        let mut used = vec![false; adv.len()];
        let mut changed = vec![0usize; n];
        let mut live: Vec<usize> = (0..n).collect();
        loop {
            let xs: Vec<f32> = gather_images(&adv, &live, per);
            if xs.is_empty() {
                break;
            }
            let pred = model.predict(&xs);
            live = live
                .iter()
                .zip(pred)
                .filter(|&(&i, p)| {
                    p != target[i] && changed[i] < budget && row(&space, i, per).iter().any(|s| *s)
                })
                .map(|(&i, _)| i)
                .collect();
            if live.is_empty() {
                break;
            }
            let xs: Vec<f32> = gather_images(&adv, &live, per);
            let ts: Vec<usize> = live.iter().map(|&i| target[i]).collect();
            let (_, g) = model.loss_grad(&xs, &ts, LossKind::Logit);
            for (k, &i) in live.iter().enumerate() {
                let gk = row(&g, k, per);
                let sp = row(&space, i, per);
                let score = |j: usize| if up { gk[j] } else { -gk[j] };
                let (mut a, mut b) = (usize::MAX, usize::MAX);
                for j in (0..per).filter(|&j| sp[j]) {
                    if a == usize::MAX || score(j) > score(a) {
                        b = a;
                        a = j;
                    } else if b == usize::MAX || score(j) > score(b) {
                        b = j;
                    }
                }
                for j in [a, b].into_iter().filter(|&j| j != usize::MAX) {
                    let v = &mut adv[i * per + j];
                    *v = (*v + self.theta).clamp(0.0, 1.0);
                    if (up && *v >= 1.0) || (!up && *v <= 0.0) {
                        space[i * per + j] = false;
                    }
                    if !used[i * per + j] {
                        used[i * per + j] = true;
                        changed[i] += 1;
                    }
                }
            }
        }
        Ok(adv)
    }
}
