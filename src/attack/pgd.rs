//! Projected Gradient Descent (Madry et al., 2018) in the L1, L2 and Linf norms.

use rand::{RngExt, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

use super::{Attack, AttackModel, LossKind, Norm, clip01, gather_images, project, step_direction};
use crate::error::{Error, Result};
use crate::util::{row, row_mut};

/// PGD: `iterations` steps of size `step` along the normalised gradient of the cross-entropy,
/// each followed by projection onto the `eps` ball and the `[0, 1]` box.
#[derive(Debug, Clone)]
pub struct Pgd {
    /// L1, L2 or Linf.
    pub norm: Norm,
    /// Budget.
    pub eps: f32,
    /// Step size.
    pub step: f32,
    /// Steps per restart.
    pub iterations: usize,
    /// Start from a random point in the ball (else from the image itself).
    pub random_init: bool,
    /// Independent starts; an image counts as fooled if any start fools it.
    pub restarts: usize,
    /// Stop an image's iterations once it is misclassified (smaller perturbations; faster).
    pub early_stop: bool,
}

impl Pgd {
    /// The common MNIST setting: Linf, eps 0.3, step 0.01, 40 iterations.
    pub fn linf(eps: f32) -> Self {
        Pgd {
            norm: Norm::Linf,
            eps,
            step: 0.01,
            iterations: 40,
            random_init: false,
            restarts: 1,
            early_stop: false,
        }
    }
}

impl Pgd {
    /// One PGD run from the images `x0` (flat, `per` values each), the loop every PGD in defed
    /// shares (attacks and adversarial training): a random start in the ball if
    /// `random_init`, then `iterations` steps of size `step` along the steepest-ascent direction
    /// of `grad`, each projected onto the `eps` ball around `x0` and the `[0, 1]` box.
    ///
    /// `grad(xs, rows)` returns the gradient to ascend at `xs`, the current values of the
    /// images at positions `rows` of the batch (gathered in that order). After every step
    /// `keep(xs, rows)` returns the rows that go on (all of them, unless stopping early).
    pub fn ascend(
        &self,
        x0: &[f32],
        per: usize,
        rng: &mut StdRng,
        mut grad: impl FnMut(&[f32], &[usize]) -> Vec<f32>,
        mut keep: impl FnMut(&[f32], &[usize]) -> Vec<usize>,
    ) -> Vec<f32> {
        let n = x0.len() / per.max(1);
        let mut delta = if self.random_init {
            (0..n)
                .flat_map(|_| random_in_ball(rng, per, self.norm, self.eps))
                .collect()
        } else {
            vec![0f32; x0.len()]
        };
        let mut cur: Vec<f32> = x0.iter().zip(&delta).map(|(a, d)| a + d).collect();
        clip01(&mut cur);
        let mut live: Vec<usize> = (0..n).collect();
        for _ in 0..self.iterations {
            if live.is_empty() {
                break;
            }
            let xs: Vec<f32> = gather_images(&cur, &live, per);
            let mut g = grad(&xs, &live);
            for (k, &j) in live.iter().enumerate() {
                let gk = row_mut(&mut g, k, per);
                step_direction(gk, self.norm);
                let d = row_mut(&mut delta, j, per);
                let base = row(x0, j, per);
                for (dv, gv) in d.iter_mut().zip(gk.iter()) {
                    *dv += self.step * gv;
                }
                project(d, self.norm, self.eps);
                // Box: the image must stay in [0, 1]; clipping only shrinks |delta|.
                for (dv, b) in d.iter_mut().zip(base) {
                    *dv = (b + *dv).clamp(0.0, 1.0) - b;
                }
                for ((c, b), dv) in row_mut(&mut cur, j, per).iter_mut().zip(base).zip(d.iter()) {
                    *c = b + dv;
                }
            }
            let xs: Vec<f32> = gather_images(&cur, &live, per);
            live = keep(&xs, &live);
        }
        cur
    }
}

fn random_in_ball(rng: &mut StdRng, n: usize, norm: Norm, eps: f32) -> Vec<f32> {
    match norm {
        Norm::Linf => (0..n).map(|_| rng.random_range(-eps..=eps)).collect(),
        _ => {
            let mut v: Vec<f32> = (0..n)
                .map(|_| {
                    let z: f32 = StandardNormal.sample(rng);
                    if norm == Norm::L1 {
                        // Laplace-distributed coordinates give uniform L1 directions.
                        let u: f32 = rng.random_range(-0.5f32..0.5);
                        -u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()
                    } else {
                        z
                    }
                })
                .collect();
            let len = norm.of(&v).max(1e-12);
            let r: f64 = rng.random::<f64>().powf(1.0 / n as f64);
            let s = (eps as f64 * r / len) as f32;
            v.iter_mut().for_each(|x| *x *= s);
            v
        }
    }
}

impl Attack for Pgd {
    fn name(&self) -> String {
        format!("PGD-{} eps={}", self.norm.name(), super::fmt_eps(self.eps))
    }
    fn norm(&self) -> Norm {
        self.norm
    }
    fn supports_targets(&self) -> bool {
        true
    }
    fn eps(&self) -> Option<f32> {
        Some(self.eps)
    }
    fn perturb(
        &self,
        model: &AttackModel,
        x: &[f32],
        labels: &[usize],
        targets: Option<&[usize]>,
        seed: u64,
    ) -> Result<Vec<f32>> {
        if self.norm == Norm::L0 {
            return Err(Error::Invalid("PGD supports L1, L2 and Linf".into()));
        }
        let per = model.image_len();
        let n = labels.len();
        let (y, sign) = match targets {
            Some(t) => (t, -1.0f32),
            None => (labels, 1.0),
        };
        let fooled = |pred: usize, i: usize| match targets {
            Some(t) => pred == t[i],
            None => pred != labels[i],
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut best = x.to_vec();
        let mut done = vec![false; n];
        for _ in 0..self.restarts.max(1) {
            let active: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
            if active.is_empty() {
                break;
            }
            let x0: Vec<f32> = gather_images(x, &active, per);
            let ya: Vec<usize> = active.iter().map(|&i| y[i]).collect();
            let grad = |xs: &[f32], rows: &[usize]| {
                let ys: Vec<usize> = rows.iter().map(|&j| ya[j]).collect();
                let (_, mut g) = model.loss_grad(xs, &ys, LossKind::CrossEntropy);
                if sign < 0.0 {
                    g.iter_mut().for_each(|v| *v = -*v);
                }
                g
            };
            let still_live = |xs: &[f32], rows: &[usize]| -> Vec<usize> {
                if !self.early_stop {
                    return rows.to_vec();
                }
                let pred = model.predict(xs);
                rows.iter()
                    .zip(pred)
                    .filter(|&(&j, p)| !fooled(p, active[j]))
                    .map(|(&j, _)| j)
                    .collect()
            };
            let cur = self.ascend(&x0, per, &mut rng, grad, still_live);
            let pred = model.predict(&cur);
            for (j, &i) in active.iter().enumerate() {
                if fooled(pred[j], i) || !done[i] {
                    row_mut(&mut best, i, per).copy_from_slice(row(&cur, j, per));
                }
                if fooled(pred[j], i) {
                    done[i] = true;
                }
            }
        }
        Ok(best)
    }
}
