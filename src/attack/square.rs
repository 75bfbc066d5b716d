//! Square Attack (Andriushchenko et al., 2020), Linf, score-based: random square updates at
//! the corners of the eps box, kept when they lower the margin loss. Batched: one query per
//! iteration for the whole batch.

use rand::{RngExt, SeedableRng, rngs::StdRng};

use super::{Attack, AttackModel, Norm, clip01};
use crate::error::Result;
use crate::util::{row, row_mut};

/// Square Attack in the Linf norm.
#[derive(Debug, Clone)]
pub struct Square {
    /// Budget.
    pub eps: f32,
    /// Queries per image after the initial one.
    pub iterations: usize,
    /// Initial share of pixels in a square.
    pub p_init: f32,
}

impl Square {
    /// The original's setting: 100 iterations, p_init 0.8.
    pub fn new(eps: f32) -> Self {
        Square {
            eps,
            iterations: 100,
            p_init: 0.8,
        }
    }

    fn p_at(&self, it: usize) -> f32 {
        // The schedule of the reference code, defined for 10,000 iterations and rescaled.
        let i = (it as f64 / self.iterations.max(1) as f64 * 10_000.0) as usize;
        let div = match i {
            0..=10 => 1.0,
            11..=50 => 2.0,
            51..=200 => 4.0,
            201..=500 => 8.0,
            501..=1000 => 16.0,
            1001..=2000 => 32.0,
            2001..=4000 => 64.0,
            4001..=6000 => 128.0,
            6001..=8000 => 256.0,
            _ => 512.0,
        };
        self.p_init / div
    }
}

fn margins(model: &AttackModel, x: &[f32], labels: &[usize]) -> Vec<f32> {
    let k = model.classes();
    model
        .logits(x)
        .chunks(k)
        .zip(labels)
        .map(|(z, &y)| {
            let other = z
                .iter()
                .enumerate()
                .filter(|(c, _)| *c != y)
                .fold(f32::NEG_INFINITY, |m, (_, v)| m.max(*v));
            z[y] - other
        })
        .collect()
}

impl Attack for Square {
    fn name(&self) -> String {
        format!("Square-Linf eps={}", super::fmt_eps(self.eps))
    }
    fn norm(&self) -> Norm {
        Norm::Linf
    }
    fn eps(&self) -> Option<f32> {
        Some(self.eps)
    }
    fn perturb(
        &self,
        model: &AttackModel,
        x: &[f32],
        labels: &[usize],
        _targets: Option<&[usize]>,
        seed: u64,
    ) -> Result<Vec<f32>> {
        let [c, h, w] = model.image_shape();
        let per = c * h * w;
        let n = labels.len();
        let mut rng = StdRng::seed_from_u64(seed);
        // Vertical stripes of +-eps.
        let mut best = x.to_vec();
        for i in 0..n {
            for ch in 0..c {
                for col in 0..w {
                    let s = if rng.random::<bool>() {
                        self.eps
                    } else {
                        -self.eps
                    };
                    for row in 0..h {
                        let j = i * per + ch * h * w + row * w + col;
                        best[j] = x[j] + s;
                    }
                }
            }
        }
        clip01(&mut best);
        let mut margin = margins(model, &best, labels);
        for it in 0..self.iterations {
            let live: Vec<usize> = (0..n).filter(|&i| margin[i] > 0.0).collect();
            if live.is_empty() {
                break;
            }
            let p = self.p_at(it);
            let s = ((p * (h * w) as f32).sqrt().round() as usize).clamp(1, h.min(w));
            let mut cand = Vec::with_capacity(live.len() * per);
            for &i in &live {
                let xi = row(x, i, per);
                let bi = row(&best, i, per);
                let mut ci = bi.to_vec();
                let vh = rng.random_range(0..=h - s);
                let vw = rng.random_range(0..=w - s);
                // Draw signs until the window actually changes (a few tries).
                for _ in 0..10 {
                    let signs: Vec<f32> = (0..c)
                        .map(|_| {
                            if rng.random::<bool>() {
                                self.eps
                            } else {
                                -self.eps
                            }
                        })
                        .collect();
                    let mut changes = false;
                    for (ch, sign) in signs.iter().enumerate() {
                        for r in vh..vh + s {
                            for col in vw..vw + s {
                                let j = ch * h * w + r * w + col;
                                let v = (xi[j] + sign).clamp(0.0, 1.0);
                                changes |= (v - bi[j]).abs() > 1e-7;
                                ci[j] = v;
                            }
                        }
                    }
                    if changes {
                        break;
                    }
                }
                cand.extend(ci);
            }
            let ys: Vec<usize> = live.iter().map(|&i| labels[i]).collect();
            let m = margins(model, &cand, &ys);
            for (k, &i) in live.iter().enumerate() {
                if m[k] < margin[i] {
                    margin[i] = m[k];
                    row_mut(&mut best, i, per).copy_from_slice(row(&cand, k, per));
                }
            }
        }
        Ok(best)
    }
}
