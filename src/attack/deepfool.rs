//! DeepFool (Moosavi-Dezfooli et al., 2016): the smallest L2 step to the nearest linearised
//! decision boundary, repeated until the label changes.

use super::{Attack, AttackModel, Norm, clip01, gather_images};
use crate::error::Result;
use crate::util::{row, row_mut};

/// DeepFool over all classes.
#[derive(Debug, Clone)]
pub struct DeepFool {
    /// Most iterations per image.
    pub max_iter: usize,
    /// Overshoot factor applied to the total perturbation.
    pub overshoot: f32,
}

impl Default for DeepFool {
    fn default() -> Self {
        DeepFool {
            max_iter: 100,
            overshoot: 1e-6,
        }
    }
}

impl Attack for DeepFool {
    fn name(&self) -> String {
        "DeepFool".into()
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
        _labels: &[usize],
        _targets: Option<&[usize]>,
        _seed: u64,
    ) -> Result<Vec<f32>> {
        let per = model.image_len();
        let classes = model.classes();
        let n = x.len() / per;
        let orig = model.predict(x);
        let mut r_tot = vec![0f64; x.len()];
        let mut adv = x.to_vec();
        let mut live: Vec<usize> = (0..n).collect();
        for _ in 0..self.max_iter {
            if live.is_empty() {
                break;
            }
            let xs: Vec<f32> = gather_images(&adv, &live, per);
            let (logits, jac) = model.jacobian(&xs);
            let mut still = Vec::new();
            for (k, &i) in live.iter().enumerate() {
                let z = row(&logits, k, classes);
                let pred = crate::util::argmax_rows(z, classes)[0];
                if pred != orig[i] {
                    continue;
                }
                still.push(i);
                let o = orig[i];
                let go = row(&jac[o], k, per);
                let mut best: Option<(f64, f64, usize)> = None; // (distance, |f|, class)
                for (c, jc) in jac.iter().enumerate() {
                    if c == o {
                        continue;
                    }
                    let gc = row(jc, k, per);
                    let wn: f64 = gc
                        .iter()
                        .zip(go)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    let f = (z[c] - z[o]) as f64;
                    let dist = f.abs() / (wn + 1e-12);
                    if best.is_none_or(|b| dist < b.0) {
                        best = Some((dist, f.abs(), c));
                    }
                }
                let Some((_, f, c)) = best else { continue };
                let gc = row(&jac[c], k, per);
                let w: Vec<f64> = gc.iter().zip(go).map(|(a, b)| (a - b) as f64).collect();
                let wn2: f64 = w.iter().map(|v| v * v).sum::<f64>().max(1e-24);
                let scale = (f + 1e-4) / wn2;
                let r = row_mut(&mut r_tot, i, per);
                for (rv, wv) in r.iter_mut().zip(&w) {
                    *rv += scale * wv;
                }
                let a = row_mut(&mut adv, i, per);
                for ((av, xv), rv) in a.iter_mut().zip(row(x, i, per)).zip(r.iter()) {
                    *av = xv + ((1.0 + self.overshoot as f64) * rv) as f32;
                }
                clip01(a);
            }
            live = still;
        }
        Ok(adv)
    }
}
