//! Norms, step directions and projections on flat image buffers.

use serde::{Deserialize, Serialize};

/// The norm that measures (and bounds) a perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Norm {
    /// Number of changed pixels.
    L0,
    /// Sum of absolute changes.
    L1,
    /// Euclidean length.
    L2,
    /// Largest absolute change.
    Linf,
}

impl Norm {
    /// Short name (`L0`, `L1`, `L2`, `Linf`).
    pub fn name(self) -> &'static str {
        match self {
            Norm::L0 => "L0",
            Norm::L1 => "L1",
            Norm::L2 => "L2",
            Norm::Linf => "Linf",
        }
    }

    /// The norm of one vector (f64 accumulation, so tiny values do not underflow).
    pub fn of(self, v: &[f32]) -> f64 {
        match self {
            Norm::L0 => v.iter().filter(|x| **x != 0.0).count() as f64,
            Norm::L1 => v.iter().map(|x| x.abs() as f64).sum(),
            Norm::L2 => v
                .iter()
                .map(|x| (*x as f64) * (*x as f64))
                .sum::<f64>()
                .sqrt(),
            Norm::Linf => v.iter().fold(0f64, |m, x| m.max(x.abs() as f64)),
        }
    }
}

impl std::str::FromStr for Norm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "l0" | "0" => Ok(Norm::L0),
            "l1" | "1" => Ok(Norm::L1),
            "l2" | "2" => Ok(Norm::L2),
            "linf" | "inf" | "l_inf" => Ok(Norm::Linf),
            other => Err(format!("unknown norm {other:?} (l1, l2 or linf)")),
        }
    }
}

/// Unit-norm steepest-ascent direction of a gradient for one image, in place.
///
/// Computed in f64 and without an additive tolerance: a saturated softmax gives gradients of
/// 1e-20 and below, and `g / (||g|| + 1e-7)` would make them vanish. A zero gradient stays
/// zero.
pub fn step_direction(g: &mut [f32], norm: Norm) {
    match norm {
        Norm::Linf => g
            .iter_mut()
            .for_each(|v| *v = v.signum() * (*v != 0.0) as u8 as f32),
        Norm::L1 | Norm::L2 | Norm::L0 => {
            // Rescale first so squares of tiny values do not underflow.
            let max = g.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
            if max == 0.0 || !max.is_finite() {
                g.iter_mut().for_each(|v| *v = 0.0);
                return;
            }
            let scaled: Vec<f64> = g.iter().map(|&v| v as f64 / max).collect();
            let n = match norm {
                Norm::L1 => scaled.iter().map(|v| v.abs()).sum::<f64>(),
                _ => scaled.iter().map(|v| v * v).sum::<f64>().sqrt(),
            };
            for (o, s) in g.iter_mut().zip(scaled) {
                *o = (s / n) as f32;
            }
        }
    }
}

/// Projects a perturbation onto the ball `||delta|| <= eps`, in place.
pub fn project(delta: &mut [f32], norm: Norm, eps: f32) {
    match norm {
        Norm::Linf => delta.iter_mut().for_each(|v| *v = v.clamp(-eps, eps)),
        Norm::L2 => {
            let n = Norm::L2.of(delta);
            if n > eps as f64 {
                let s = (eps as f64 / n) as f32;
                delta.iter_mut().for_each(|v| *v *= s);
            }
        }
        Norm::L1 => project_l1(delta, eps),
        Norm::L0 => {
            let k = eps.max(0.0) as usize;
            if Norm::L0.of(delta) as usize > k {
                let mut idx: Vec<usize> = (0..delta.len()).collect();
                idx.sort_by(|&a, &b| delta[b].abs().total_cmp(&delta[a].abs()));
                for &i in &idx[k..] {
                    delta[i] = 0.0;
                }
            }
        }
    }
}

/// Euclidean projection onto the L1 ball (Duchi et al., 2008).
fn project_l1(delta: &mut [f32], eps: f32) {
    let total: f64 = delta.iter().map(|v| v.abs() as f64).sum();
    if total <= eps as f64 {
        return;
    }
    let mut mags: Vec<f64> = delta.iter().map(|v| v.abs() as f64).collect();
    mags.sort_by(|a, b| b.total_cmp(a));
    let mut cum = 0f64;
    let mut theta = 0f64;
    for (i, m) in mags.iter().enumerate() {
        cum += m;
        let t = (cum - eps as f64) / (i + 1) as f64;
        if *m > t {
            theta = t;
        } else {
            break;
        }
    }
    for v in delta.iter_mut() {
        let m = (v.abs() as f64 - theta).max(0.0);
        *v = (v.signum() as f64 * m) as f32;
    }
    // Guard against rounding pushing the sum a hair over eps.
    let after: f64 = delta.iter().map(|v| v.abs() as f64).sum();
    if after > eps as f64 {
        let s = (eps as f64 / after) as f32;
        delta.iter_mut().for_each(|v| *v *= s);
    }
}

/// Per-image sizes of `adv - benign` in the four norms: `[L0, L1, L2, Linf]`.
pub fn perturbation_sizes(benign: &[f32], adv: &[f32]) -> [f64; 4] {
    let d: Vec<f32> = adv.iter().zip(benign).map(|(a, b)| a - b).collect();
    [
        Norm::L0.of(&d),
        Norm::L1.of(&d),
        Norm::L2.of(&d),
        Norm::Linf.of(&d),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    #[test]
    fn projections_respect_the_budget() {
        let mut rng = StdRng::seed_from_u64(1);
        for trial in 0..300 {
            let n = 1 + trial % 50;
            let scale: f32 = rng.random_range(0.001..10.0);
            let v: Vec<f32> = (0..n)
                .map(|_| rng.random_range(-1.0..1.0) * scale)
                .collect();
            let eps: f32 = rng.random_range(0.01..5.0);
            for norm in [Norm::L1, Norm::L2, Norm::Linf] {
                let mut d = v.clone();
                project(&mut d, norm, eps);
                assert!(
                    norm.of(&d) <= eps as f64 + 1e-6,
                    "{norm:?} {} > {eps}",
                    norm.of(&d)
                );
                // Inside the ball already: unchanged.
                if norm.of(&v) <= eps as f64 {
                    assert_eq!(d, v);
                }
                // Projection keeps signs and never grows a coordinate.
                for (a, b) in d.iter().zip(&v) {
                    assert!(a.abs() <= b.abs() + 1e-7 && (a * b >= 0.0));
                }
            }
        }
    }

    #[test]
    fn l1_projection_is_the_closest_point() {
        // Known case: (3, 1) onto the L1 ball of radius 2 is (2, 0).
        let mut d = vec![3.0f32, 1.0];
        project(&mut d, Norm::L1, 2.0);
        assert!((d[0] - 2.0).abs() < 1e-6 && d[1].abs() < 1e-6, "{d:?}");
        let mut d = vec![1.0f32, 1.0, -1.0];
        project(&mut d, Norm::L1, 1.5);
        assert!(d.iter().all(|v| (v.abs() - 0.5).abs() < 1e-6), "{d:?}");
    }

    #[test]
    fn step_direction_survives_tiny_gradients() {
        let mut g = vec![1e-30f32, -2e-30, 0.0];
        step_direction(&mut g, Norm::L2);
        assert!((Norm::L2.of(&g) - 1.0).abs() < 1e-6, "{g:?}");
        let mut g = vec![1e-30f32, -3e-30];
        step_direction(&mut g, Norm::L1);
        assert!((Norm::L1.of(&g) - 1.0).abs() < 1e-6, "{g:?}");
        let mut z = vec![0.0f32; 4];
        step_direction(&mut z, Norm::L2);
        assert!(z.iter().all(|v| *v == 0.0));
    }
}
