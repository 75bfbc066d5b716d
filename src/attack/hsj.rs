//! HopSkipJump (Chen, Jordan & Wainwright, 2020): a decision-based attack that needs only the
//! predicted label. Every image of a batch advances in lockstep, so each binary-search step,
//! step-size trial and gradient estimate is one batched query.

use rand::{RngExt, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

use super::{Attack, AttackModel, Norm, clip01};
use crate::error::{Error, Result};
use crate::util::{row, row_mut};

/// HopSkipJump, untargeted, L2 or Linf.
#[derive(Debug, Clone)]
pub struct HopSkipJump {
    /// L2 or Linf.
    pub norm: Norm,
    /// Iterations. The original ran IBM ART 4 times with 10 iterations each; ART's iteration
    /// counter carries over between those calls, which makes them 40 iterations of one schedule.
    pub iterations: usize,
    /// Most queries per gradient estimate.
    pub max_eval: usize,
    /// Queries of the first gradient estimate.
    pub init_eval: usize,
    /// Random draws tried to find an adversarial starting point.
    pub init_size: usize,
}

impl HopSkipJump {
    /// The original's setting: 4 x 10 = 40 iterations, max_eval 100, init_eval 10.
    pub fn new(norm: Norm) -> Self {
        HopSkipJump {
            norm,
            iterations: 40,
            max_eval: 100,
            init_eval: 10,
            init_size: 100,
        }
    }
}

impl HopSkipJump {
    fn dist(&self, a: &[f32], b: &[f32]) -> f64 {
        let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        self.norm.of(&d)
    }

    fn interpolate(&self, orig: &[f32], cur: &[f32], alpha: f64) -> Vec<f32> {
        match self.norm {
            Norm::Linf => orig
                .iter()
                .zip(cur)
                .map(|(o, c)| c.clamp(o - alpha as f32, o + alpha as f32))
                .collect(),
            _ => orig
                .iter()
                .zip(cur)
                .map(|(o, c)| ((1.0 - alpha) * *o as f64 + alpha * *c as f64) as f32)
                .collect(),
        }
    }

    /// Moves each `adv[i]` (adversarial) towards `x[i]` to the boundary, in lockstep.
    #[allow(clippy::too_many_arguments)]
    fn binary_search(
        &self,
        model: &AttackModel,
        x: &[f32],
        adv: &mut [f32],
        labels: &[usize],
        idx: &[usize],
        theta: f64,
        per: usize,
    ) {
        let mut upper: Vec<f64> = idx
            .iter()
            .map(|&i| match self.norm {
                Norm::Linf => self.dist(row(adv, i, per), row(x, i, per)),
                _ => 1.0,
            })
            .collect();
        let mut lower = vec![0f64; idx.len()];
        let thr: Vec<f64> = upper
            .iter()
            .map(|&u| match self.norm {
                Norm::Linf => (u * theta).min(theta),
                _ => theta,
            })
            .collect();
        for _ in 0..64 {
            let open: Vec<usize> = (0..idx.len())
                .filter(|&k| (upper[k] - lower[k]) / thr[k].max(1e-12) > 1.0)
                .collect();
            if open.is_empty() {
                break;
            }
            let mut q = Vec::with_capacity(open.len() * per);
            for &k in &open {
                let i = idx[k];
                let a = (upper[k] + lower[k]) / 2.0;
                q.extend(self.interpolate(row(x, i, per), row(adv, i, per), a));
            }
            let pred = model.predict(&q);
            for (m, &k) in open.iter().enumerate() {
                let a = (upper[k] + lower[k]) / 2.0;
                if pred[m] != labels[idx[k]] {
                    upper[k] = a;
                } else {
                    lower[k] = a;
                }
            }
        }
        for (k, &i) in idx.iter().enumerate() {
            let v = self.interpolate(row(x, i, per), row(adv, i, per), upper[k]);
            row_mut(adv, i, per).copy_from_slice(&v);
        }
    }
}

impl Attack for HopSkipJump {
    fn name(&self) -> String {
        format!("HopSkipJump-{}", self.norm.name())
    }
    fn norm(&self) -> Norm {
        self.norm
    }
    fn eps(&self) -> Option<f32> {
        None
    }
    fn perturb(
        &self,
        model: &AttackModel,
        x: &[f32],
        labels: &[usize],
        _targets: Option<&[usize]>,
        seed: u64,
    ) -> Result<Vec<f32>> {
        if !matches!(self.norm, Norm::L2 | Norm::Linf) {
            return Err(Error::Invalid("HopSkipJump supports L2 and Linf".into()));
        }
        let per = model.image_len();
        let n = labels.len();
        let d = per as f64;
        let theta = match self.norm {
            Norm::L2 => 1.0 / (d * d.sqrt()),
            _ => 1.0 / (d * d),
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut adv = x.to_vec();
        // Initialisation: a uniformly random adversarial image, then a blend search towards x.
        let mut found = vec![false; n];
        let mut start = vec![0f32; x.len()];
        for _ in 0..self.init_size.div_ceil(10) {
            let need: Vec<usize> = (0..n).filter(|&i| !found[i]).collect();
            if need.is_empty() {
                break;
            }
            let q: Vec<f32> = (0..need.len() * 10 * per)
                .map(|_| rng.random::<f32>())
                .collect();
            let pred = model.predict(&q);
            for (k, &i) in need.iter().enumerate() {
                for r in 0..10 {
                    if !found[i] && pred[k * 10 + r] != labels[i] {
                        found[i] = true;
                        let off = (k * 10 + r) * per;
                        row_mut(&mut start, i, per).copy_from_slice(&q[off..off + per]);
                    }
                }
            }
        }
        let live: Vec<usize> = (0..n).filter(|&i| found[i]).collect();
        if live.is_empty() {
            return Ok(adv);
        }
        {
            // Blend search between x (benign) and the random start, tolerance 1e-3.
            let (mut lo, mut hi) = (vec![0f64; live.len()], vec![1f64; live.len()]);
            while (0..live.len()).any(|k| hi[k] - lo[k] > 1e-3) {
                let mut q = Vec::with_capacity(live.len() * per);
                for (k, &i) in live.iter().enumerate() {
                    let m = (lo[k] + hi[k]) / 2.0;
                    q.extend(
                        (i * per..(i + 1) * per)
                            .map(|j| ((1.0 - m) * x[j] as f64 + m * start[j] as f64) as f32),
                    );
                }
                let pred = model.predict(&q);
                for (k, &i) in live.iter().enumerate() {
                    let m = (lo[k] + hi[k]) / 2.0;
                    if pred[k] != labels[i] {
                        hi[k] = m;
                    } else {
                        lo[k] = m;
                    }
                }
            }
            for (k, &i) in live.iter().enumerate() {
                for j in i * per..(i + 1) * per {
                    adv[j] = ((1.0 - hi[k]) * x[j] as f64 + hi[k] * start[j] as f64) as f32;
                }
            }
        }
        {
            self.binary_search(model, x, &mut adv, labels, &live, theta, per);
            let mut dist: Vec<f64> = live
                .iter()
                .map(|&i| self.dist(row(&adv, i, per), row(x, i, per)))
                .collect();
            for t in 0..self.iterations {
                let delta: Vec<f64> = dist
                    .iter()
                    .map(|&dd| {
                        if t == 0 {
                            0.1
                        } else if self.norm == Norm::L2 {
                            d.sqrt() * theta * dd
                        } else {
                            d * theta * dd
                        }
                    })
                    .collect();
                let evals = ((self.init_eval as f64 * ((t + 1) as f64).sqrt()) as usize)
                    .clamp(1, self.max_eval);
                // Gradient estimate at the boundary point of every live image.
                let mut rvs = Vec::with_capacity(live.len() * evals * per);
                let mut q = Vec::with_capacity(live.len() * evals * per);
                for (k, &i) in live.iter().enumerate() {
                    let base = row(&adv, i, per);
                    for _ in 0..evals {
                        let mut rv: Vec<f32> = (0..per)
                            .map(|_| match self.norm {
                                Norm::L2 => StandardNormal.sample(&mut rng),
                                _ => rng.random_range(-1.0f32..1.0),
                            })
                            .collect();
                        let len = Norm::L2.of(&rv).max(1e-12) as f32;
                        rv.iter_mut().for_each(|v| *v /= len);
                        let mut p: Vec<f32> = base
                            .iter()
                            .zip(&rv)
                            .map(|(b, r)| b + delta[k] as f32 * r)
                            .collect();
                        clip01(&mut p);
                        // The direction actually taken after clipping.
                        let rv: Vec<f32> = p
                            .iter()
                            .zip(base)
                            .map(|(a, b)| (a - b) / delta[k] as f32)
                            .collect();
                        q.extend(p);
                        rvs.extend(rv);
                    }
                }
                let pred = model.predict(&q);
                let mut update = vec![0f32; live.len() * per];
                for (k, &i) in live.iter().enumerate() {
                    let f: Vec<f64> = (0..evals)
                        .map(|e| {
                            if pred[k * evals + e] != labels[i] {
                                1.0
                            } else {
                                -1.0
                            }
                        })
                        .collect();
                    let mean = f.iter().sum::<f64>() / evals as f64;
                    let mut g = vec![0f64; per];
                    for (e, fv) in f.iter().enumerate() {
                        let w = if mean.abs() == 1.0 { mean } else { fv - mean };
                        let r = &rvs[(k * evals + e) * per..(k * evals + e + 1) * per];
                        for (gv, rv) in g.iter_mut().zip(r) {
                            *gv += w * *rv as f64;
                        }
                    }
                    let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                    for (u, gv) in row_mut(&mut update, k, per).iter_mut().zip(&g) {
                        let unit = gv / gn;
                        *u = match self.norm {
                            Norm::L2 => unit as f32,
                            _ => unit.signum() as f32,
                        };
                    }
                }
                // Geometric step-size search.
                let mut eps: Vec<f64> = dist
                    .iter()
                    .map(|dd| 2.0 * dd / ((t + 1) as f64).sqrt())
                    .collect();
                let mut open: Vec<usize> = (0..live.len()).collect();
                for _ in 0..30 {
                    if open.is_empty() {
                        break;
                    }
                    let mut q = Vec::with_capacity(open.len() * per);
                    for &k in &open {
                        eps[k] /= 2.0;
                        let i = live[k];
                        let mut p: Vec<f32> = row(&adv, i, per)
                            .iter()
                            .zip(row(&update, k, per))
                            .map(|(a, u)| a + (eps[k] as f32) * u)
                            .collect();
                        clip01(&mut p);
                        q.extend(p);
                    }
                    let pred = model.predict(&q);
                    let mut still = Vec::new();
                    for (m, &k) in open.iter().enumerate() {
                        let i = live[k];
                        if pred[m] != labels[i] {
                            row_mut(&mut adv, i, per).copy_from_slice(row(&q, m, per));
                        } else {
                            still.push(k);
                        }
                    }
                    open = still;
                }
                self.binary_search(model, x, &mut adv, labels, &live, theta, per);
                dist = live
                    .iter()
                    .map(|&i| self.dist(row(&adv, i, per), row(x, i, per)))
                    .collect();
            }
        }
        Ok(adv)
    }
}
