//! Carlini-Wagner attacks (Carlini & Wagner, 2017) with the margin loss
//! `max(Z_y - max_{k != y} Z_k, -kappa)`, optimised with Adam in tanh space.

use super::{Attack, AttackModel, LossKind, Norm};
use crate::error::Result;
use crate::util::{row, row_mut};

/// Adam on a flat parameter vector.
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
    lr: f64,
}

impl Adam {
    fn new(n: usize, lr: f64) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            lr,
        }
    }
    fn step(&mut self, w: &mut [f64], g: &[f64]) {
        self.t += 1;
        let (b1, b2) = (0.9f64, 0.999f64);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for i in 0..w.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            w[i] -= self.lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + 1e-8);
        }
    }
}

fn atanh_clamped(v: f64) -> f64 {
    let v = v.clamp(-1.0 + 1e-6, 1.0 - 1e-6);
    0.5 * ((1.0 + v) / (1.0 - v)).ln()
}

/// Carlini-Wagner Linf: the image is `lo + (hi - lo) (tanh(w) + 1) / 2` with
/// `[lo, hi] = [x - eps, x + eps] ∩ [0, 1]`, so every iterate is inside the budget; the margin
/// loss is minimised for `iterations` steps, stopping once the image is misclassified.
#[derive(Debug, Clone)]
pub struct CwLinf {
    /// Budget.
    pub eps: f32,
    /// Adam steps.
    pub iterations: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Confidence margin kappa.
    pub confidence: f32,
}

impl CwLinf {
    /// The original's setting: 200 iterations.
    pub fn new(eps: f32) -> Self {
        CwLinf {
            eps,
            iterations: 200,
            lr: 0.1,
            confidence: 0.0,
        }
    }
}

impl Attack for CwLinf {
    fn name(&self) -> String {
        format!("CW-Linf eps={}", super::fmt_eps(self.eps))
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
        _seed: u64,
    ) -> Result<Vec<f32>> {
        let per = model.image_len();
        let n = labels.len();
        let lo: Vec<f64> = x.iter().map(|&v| (v - self.eps).max(0.0) as f64).collect();
        let hi: Vec<f64> = x.iter().map(|&v| (v + self.eps).min(1.0) as f64).collect();
        let span: Vec<f64> = lo.iter().zip(&hi).map(|(l, h)| h - l).collect();
        // Start at the image itself, nudged off the box faces: a pixel exactly on a face sits
        // where tanh is flat and would never move.
        let mut w: Vec<f64> = x
            .iter()
            .zip(lo.iter().zip(&span))
            .map(|(&v, (l, s))| {
                if *s > 0.0 {
                    atanh_clamped((2.0 * (v as f64 - l) / s - 1.0).clamp(-0.99, 0.99))
                } else {
                    0.0
                }
            })
            .collect();
        let image = |w: &[f64], i: usize| -> Vec<f32> {
            (i * per..(i + 1) * per)
                .map(|j| (lo[j] + span[j] * (w[j].tanh() + 1.0) / 2.0) as f32)
                .collect()
        };
        let mut best = x.to_vec();
        let mut live: Vec<usize> = (0..n).collect();
        let mut opt = Adam::new(w.len(), self.lr);
        for _ in 0..self.iterations {
            if live.is_empty() {
                break;
            }
            let xs: Vec<f32> = live.iter().flat_map(|&i| image(&w, i)).collect();
            let ys: Vec<usize> = live.iter().map(|&i| labels[i]).collect();
            let (margin, g) = model.loss_grad(&xs, &ys, LossKind::Margin);
            let mut grad_w = vec![0f64; w.len()];
            let mut still = Vec::new();
            for (k, &i) in live.iter().enumerate() {
                row_mut(&mut best, i, per).copy_from_slice(row(&xs, k, per));
                if margin[k] < 0.0 {
                    continue; // fooled
                }
                still.push(i);
                if margin[k] <= -self.confidence {
                    continue;
                }
                for j in 0..per {
                    let p = i * per + j;
                    let t = w[p].tanh();
                    grad_w[p] = g[k * per + j] as f64 * span[p] * (1.0 - t * t) / 2.0;
                }
            }
            opt.step(&mut w, &grad_w);
            live = still;
        }
        for &i in &live {
            row_mut(&mut best, i, per).copy_from_slice(&image(&w, i));
        }
        Ok(best)
    }
}

/// Carlini-Wagner L2: minimise `||x' - x||^2 + c * margin(x')` in tanh space, with a binary
/// search over `c` per image; returns the smallest successful perturbation found.
#[derive(Debug, Clone)]
pub struct CwL2 {
    /// Binary-search steps over `c`.
    pub binary_steps: usize,
    /// Adam steps per value of `c`.
    pub iterations: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Initial `c`.
    pub initial_const: f64,
    /// Confidence margin kappa.
    pub confidence: f32,
}

impl Default for CwL2 {
    fn default() -> Self {
        CwL2 {
            binary_steps: 6,
            iterations: 100,
            lr: 0.05,
            initial_const: 0.1,
            confidence: 0.0,
        }
    }
}

impl Attack for CwL2 {
    fn name(&self) -> String {
        "CW-L2".into()
    }
    fn norm(&self) -> Norm {
        Norm::L2
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
        _seed: u64,
    ) -> Result<Vec<f32>> {
        let per = model.image_len();
        let n = labels.len();
        let w0: Vec<f64> = x
            .iter()
            .map(|&v| atanh_clamped(2.0 * v as f64 - 1.0))
            .collect();
        let mut c = vec![self.initial_const; n];
        let mut lower = vec![0f64; n];
        let mut upper = vec![f64::INFINITY; n];
        let mut best = x.to_vec();
        let mut best_l2 = vec![f64::INFINITY; n];
        for _ in 0..self.binary_steps.max(1) {
            let mut w = w0.clone();
            let mut opt = Adam::new(w.len(), self.lr);
            let mut success = vec![false; n];
            for _ in 0..self.iterations {
                let xs: Vec<f32> = w.iter().map(|v| ((v.tanh() + 1.0) / 2.0) as f32).collect();
                let (margin, g) = model.loss_grad(&xs, labels, LossKind::Margin);
                let mut grad_w = vec![0f64; w.len()];
                for i in 0..n {
                    let mut l2 = 0f64;
                    for j in i * per..(i + 1) * per {
                        let d = (xs[j] - x[j]) as f64;
                        l2 += d * d;
                    }
                    if margin[i] < 0.0 {
                        success[i] = true;
                        if l2 < best_l2[i] {
                            best_l2[i] = l2;
                            row_mut(&mut best, i, per).copy_from_slice(row(&xs, i, per));
                        }
                    }
                    let active = margin[i] > -self.confidence;
                    for j in i * per..(i + 1) * per {
                        let t = w[j].tanh();
                        let mut gx = 2.0 * (xs[j] - x[j]) as f64;
                        if active {
                            gx += c[i] * g[j] as f64;
                        }
                        grad_w[j] = gx * (1.0 - t * t) / 2.0;
                    }
                }
                opt.step(&mut w, &grad_w);
            }
            for i in 0..n {
                if success[i] {
                    upper[i] = upper[i].min(c[i]);
                    c[i] = (lower[i] + upper[i]) / 2.0;
                } else {
                    lower[i] = lower[i].max(c[i]);
                    c[i] = if upper[i].is_finite() {
                        (lower[i] + upper[i]) / 2.0
                    } else {
                        c[i] * 10.0
                    };
                }
            }
        }
        Ok(best)
    }
}
