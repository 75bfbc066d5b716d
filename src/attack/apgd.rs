//! Auto-PGD (Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of
//! diverse parameter-free attacks", ICML 2020): PGD with momentum and a step size that halves
//! at checkpoints when progress stalls, restarting from the best point found.
//!
//! The optimiser ([`apgd`]) maximises any per-image [`Objective`]; [`Apgd`] is the attack on a
//! bare classifier with the cross-entropy or DLR loss (untargeted or targeted), and the
//! adaptive attack on a whole defender ([`super::adaptive`]) plugs its own objective in.

use rand::{RngExt, SeedableRng, rngs::StdRng};

use super::{Attack, AttackModel, Norm, clip01, gather_images, project, step_direction};
use crate::error::{Error, Result};
use crate::util::{row, row_mut};

/// What an objective says about a batch of candidate images.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectiveEval {
    /// The value to maximise, per image.
    pub value: Vec<f32>,
    /// Its gradient with respect to the input, flat like the images.
    pub grad: Vec<f32>,
    /// Whether each image already reaches the attacker's goal (then its search stops).
    pub reached: Vec<bool>,
}

/// A per-image objective with input gradients. `idx` names, for each row of `x`, the image of
/// the attacked batch it belongs to, so an objective can hold per-image data (labels, targets).
pub(crate) trait Objective {
    /// Values, gradients and goal flags for candidate images `x`.
    fn eval(&self, x: &[f32], idx: &[usize]) -> Result<ObjectiveEval>;
}

/// Settings of the optimiser.
#[derive(Debug, Clone, Copy)]
pub struct ApgdConfig {
    /// Threat model.
    pub norm: Norm,
    /// Budget.
    pub eps: f32,
    /// Iterations per restart.
    pub iterations: usize,
    /// Runs; the first starts at the clean image, the others at random points of the ball.
    pub restarts: usize,
    /// Momentum weight (0.75 in the paper).
    pub momentum: f32,
    /// Seed of the random starts.
    pub seed: u64,
}

impl ApgdConfig {
    /// The paper's settings: 100 iterations, one run, momentum 0.75.
    pub fn new(norm: Norm, eps: f32) -> Self {
        ApgdConfig {
            norm,
            eps,
            iterations: 100,
            restarts: 1,
            momentum: 0.75,
            seed: 0,
        }
    }
}

/// The iterations after which the step size may halve: the paper's
/// `p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`, `p_1 = 0.22`, in whole iterations (first
/// interval `0.22 N`, each next one `0.03 N` shorter, never under `0.06 N`).
pub(crate) fn checkpoints(iterations: usize) -> Vec<usize> {
    let first = ((0.22 * iterations as f64) as usize).max(1);
    let shrink = ((0.03 * iterations as f64) as usize).max(1);
    let min = ((0.06 * iterations as f64) as usize).max(1);
    let mut w = Vec::new();
    let (mut at, mut interval) = (first, first);
    while at <= iterations {
        w.push(at);
        interval = interval.saturating_sub(shrink).max(min);
        at += interval;
    }
    w
}

/// The outcome of [`apgd`] for a batch.
#[derive(Debug, Clone)]
pub(crate) struct ApgdResult {
    /// Per image: the first point that reached the goal, else the best point found.
    pub adv: Vec<f32>,
    /// Whether each image reached the goal.
    pub reached: Vec<bool>,
    /// Best objective value per image.
    pub best: Vec<f32>,
}

/// Runs APGD on a batch `x0` (flat, `per` values per image) for `objective`.
pub(crate) fn apgd(
    objective: &dyn Objective,
    x0: &[f32],
    per: usize,
    cfg: &ApgdConfig,
) -> Result<ApgdResult> {
    apgd_from(objective, x0, None, per, cfg)
}

/// [`apgd`] whose first run starts at `start` (one point per image, projected onto the ball
/// around `x0` and the box) instead of at the clean image; later restarts are random as ever.
pub(crate) fn apgd_from(
    objective: &dyn Objective,
    x0: &[f32],
    start: Option<&[f32]>,
    per: usize,
    cfg: &ApgdConfig,
) -> Result<ApgdResult> {
    if per == 0 || !x0.len().is_multiple_of(per) {
        return Err(Error::Shape("APGD: images of inconsistent size".into()));
    }
    if let Some(s) = start
        && s.len() != x0.len()
    {
        return Err(Error::Shape(format!(
            "APGD: {} start values for {} image values",
            s.len(),
            x0.len()
        )));
    }
    if !(cfg.eps.is_finite() && cfg.eps > 0.0) {
        return Err(Error::Invalid(format!(
            "APGD: eps must be positive, not {}",
            cfg.eps
        )));
    }
    let n = x0.len() / per;
    let mut out = ApgdResult {
        adv: x0.to_vec(),
        reached: vec![false; n],
        best: vec![f32::NEG_INFINITY; n],
    };
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    for r in 0..cfg.restarts.max(1) {
        let act: Vec<usize> = (0..n).filter(|&i| !out.reached[i]).collect();
        if act.is_empty() {
            break;
        }
        let first = match (r, start) {
            (0, Some(points)) => Start::Points(points),
            (0, None) => Start::Clean,
            _ => Start::Random,
        };
        run_once(objective, x0, per, cfg, &act, first, &mut rng, &mut out)?;
    }
    Ok(out)
}

/// Where one APGD run starts.
#[derive(Clone, Copy)]
enum Start<'a> {
    /// At the clean images.
    Clean,
    /// At the given points (one per image of the batch), projected onto the ball.
    Points(&'a [f32]),
    /// At random points of the ball.
    Random,
}

#[allow(clippy::too_many_arguments)]
fn run_once(
    obj: &dyn Objective,
    x0: &[f32],
    per: usize,
    cfg: &ApgdConfig,
    act: &[usize],
    start: Start,
    rng: &mut StdRng,
    out: &mut ApgdResult,
) -> Result<()> {
    let m = act.len();
    let base = gather_images(x0, act, per);
    let eps = cfg.eps;
    // Projection onto the ball around the clean image, then the box.
    let proj = |x: &mut [f32], j: usize| {
        let b = row(&base, j, per);
        let mut d: Vec<f32> = x.iter().zip(b).map(|(a, b)| a - b).collect();
        project(&mut d, cfg.norm, eps);
        for ((o, b), d) in x.iter_mut().zip(b).zip(&d) {
            *o = b + d;
        }
        clip01(x);
    };
    let mut x = match start {
        Start::Points(points) => gather_images(points, act, per),
        Start::Clean | Start::Random => base.clone(),
    };
    if let Start::Points(_) = start {
        for j in 0..m {
            proj(row_mut(&mut x, j, per), j);
        }
    }
    if let Start::Random = start {
        for j in 0..m {
            let row = row_mut(&mut x, j, per);
            let mut d: Vec<f32> = (0..per).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            if cfg.norm != Norm::Linf {
                step_direction(&mut d, cfg.norm);
            }
            for (o, d) in row.iter_mut().zip(&d) {
                *o += eps * d;
            }
            proj(row, j);
        }
    }
    // Rows still searching (positions in `act`).
    let mut live: Vec<usize> = (0..m).collect();
    let mut e = eval_rows(obj, &x, per, act, &live)?;
    let mut st = Track::new(m, per, &x);
    st.record(&e, &live, &x, act, false, out);
    live.retain(|&j| !out.reached[act[j]]);

    let checks = checkpoints(cfg.iterations);
    let mut eta = vec![2.0 * eps; m];
    let mut x_prev = x.clone();
    let mut best_at_check = st.best_f.clone();
    let mut reduced_last = vec![true; m];
    let mut last_check = 0usize;
    for k in 0..cfg.iterations {
        if live.is_empty() {
            break;
        }
        let alpha = if k == 0 { 1.0 } else { cfg.momentum };
        for &j in &live {
            let s = j * per..(j + 1) * per;
            let mut d = st.g[s.clone()].to_vec();
            step_direction(&mut d, cfg.norm);
            let mut z: Vec<f32> = x[s.clone()]
                .iter()
                .zip(&d)
                .map(|(a, d)| a + eta[j] * d)
                .collect();
            proj(&mut z, j);
            let mut nx: Vec<f32> = (0..per)
                .map(|p| {
                    let xi = x[s.start + p];
                    xi + alpha * (z[p] - xi) + (1.0 - alpha) * (xi - x_prev[s.start + p])
                })
                .collect();
            proj(&mut nx, j);
            x_prev[s.clone()].copy_from_slice(&x[s.clone()]);
            x[s].copy_from_slice(&nx);
        }
        e = eval_rows(obj, &x, per, act, &live)?;
        st.record(&e, &live, &x, act, true, out);
        live.retain(|&j| !out.reached[act[j]]);
        if checks.contains(&(k + 1)) {
            let span = (k + 1 - last_check) as f32;
            for &j in &live {
                let oscillating = (st.increases[j] as f32) < 0.75 * span;
                let stalled = !reduced_last[j] && best_at_check[j] >= st.best_f[j];
                reduced_last[j] = oscillating || stalled;
                if reduced_last[j] {
                    eta[j] /= 2.0;
                    let s = j * per..(j + 1) * per;
                    x[s.clone()].copy_from_slice(&st.x_best[s.clone()]);
                    st.g[s.clone()].copy_from_slice(&st.g_best[s.clone()]);
                    x_prev[s.clone()].copy_from_slice(&st.x_best[s]);
                }
                st.increases[j] = 0;
                best_at_check[j] = st.best_f[j];
            }
            last_check = k + 1;
        }
    }
    Ok(())
}

/// Per-row state of one APGD run: the last value and gradient, the best point so far, and how
/// often the value rose since the last checkpoint.
struct Track {
    per: usize,
    f: Vec<f32>,
    g: Vec<f32>,
    best_f: Vec<f32>,
    x_best: Vec<f32>,
    g_best: Vec<f32>,
    increases: Vec<usize>,
}

impl Track {
    fn new(m: usize, per: usize, x: &[f32]) -> Self {
        Track {
            per,
            f: vec![f32::NEG_INFINITY; m],
            g: vec![0.0; m * per],
            best_f: vec![f32::NEG_INFINITY; m],
            x_best: x.to_vec(),
            g_best: vec![0.0; m * per],
            increases: vec![0; m],
        }
    }

    /// Takes in an evaluation of the `live` rows of `x`, and updates the batch's result.
    fn record(
        &mut self,
        e: &ObjectiveEval,
        live: &[usize],
        x: &[f32],
        act: &[usize],
        count_increases: bool,
        out: &mut ApgdResult,
    ) {
        let per = self.per;
        for (r, &j) in live.iter().enumerate() {
            let v = e.value[r];
            if count_increases && v > self.f[j] {
                self.increases[j] += 1;
            }
            self.f[j] = v;
            let grad = row(&e.grad, r, per);
            row_mut(&mut self.g, j, per).copy_from_slice(grad);
            let xi = row(x, j, per);
            if v > self.best_f[j] {
                self.best_f[j] = v;
                row_mut(&mut self.x_best, j, per).copy_from_slice(xi);
                row_mut(&mut self.g_best, j, per).copy_from_slice(grad);
            }
            let i = act[j];
            if !out.reached[i] && (e.reached[r] || v > out.best[i]) {
                row_mut(&mut out.adv, i, per).copy_from_slice(xi);
                out.reached[i] = e.reached[r];
            }
            out.best[i] = out.best[i].max(v);
        }
    }
}

fn eval_rows(
    obj: &dyn Objective,
    x: &[f32],
    per: usize,
    act: &[usize],
    live: &[usize],
) -> Result<ObjectiveEval> {
    let xs = gather_images(x, live, per);
    let idx: Vec<usize> = live.iter().map(|&j| act[j]).collect();
    let e = obj.eval(&xs, &idx)?;
    if e.value.len() != live.len() || e.grad.len() != xs.len() || e.reached.len() != live.len() {
        return Err(Error::Invalid(
            "objective returned results of the wrong size".into(),
        ));
    }
    Ok(e)
}

/// The loss APGD ascends on a bare classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApgdLoss {
    /// Cross-entropy against the true label.
    CrossEntropy,
    /// Difference of logits ratio: `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`; invariant to
    /// shifting and scaling the logits.
    Dlr,
}

/// APGD on a bare classifier: untargeted (CE or DLR) or targeted DLR over the `targets` most
/// likely wrong classes in turn (AutoAttack's APGD-T).
#[derive(Debug, Clone)]
pub struct Apgd {
    /// Optimiser settings.
    pub config: ApgdConfig,
    /// The loss.
    pub loss: ApgdLoss,
    /// For targeted DLR: how many of the top wrong classes to try (0: untargeted).
    pub targets: usize,
}

impl Apgd {
    /// APGD-CE, 100 iterations.
    pub fn ce(norm: Norm, eps: f32) -> Self {
        Apgd {
            config: ApgdConfig::new(norm, eps),
            loss: ApgdLoss::CrossEntropy,
            targets: 0,
        }
    }

    /// APGD-T: targeted DLR over the 9 most likely wrong classes, 100 iterations each.
    pub fn dlr_targeted(norm: Norm, eps: f32) -> Self {
        Apgd {
            config: ApgdConfig::new(norm, eps),
            loss: ApgdLoss::Dlr,
            targets: 9,
        }
    }
}

struct ClassifierObjective<'a> {
    model: &'a AttackModel,
    labels: &'a [usize],
    loss: ApgdLoss,
    targets: Option<&'a [usize]>,
}

impl Objective for ClassifierObjective<'_> {
    fn eval(&self, x: &[f32], idx: &[usize]) -> Result<ObjectiveEval> {
        let labels: Vec<usize> = idx.iter().map(|&i| self.labels[i]).collect();
        let targets: Option<Vec<usize>> = self.targets.map(|t| idx.iter().map(|&i| t[i]).collect());
        let (value, grad, pred) = match self.loss {
            ApgdLoss::CrossEntropy => self.model.ce_grad(x, &labels),
            ApgdLoss::Dlr => self.model.dlr_grad(x, &labels, targets.as_deref()),
        };
        let reached = pred
            .iter()
            .zip(&labels)
            .enumerate()
            .map(|(r, (p, y))| match &targets {
                Some(t) => *p == t[r],
                None => p != y,
            })
            .collect();
        Ok(ObjectiveEval {
            value,
            grad,
            reached,
        })
    }
}

impl Attack for Apgd {
    fn name(&self) -> String {
        let loss = match (self.loss, self.targets) {
            (ApgdLoss::CrossEntropy, _) => "CE".to_string(),
            (ApgdLoss::Dlr, 0) => "DLR".to_string(),
            (ApgdLoss::Dlr, _) => "DLR-T".to_string(),
        };
        // Non-default effort is part of the name, so reports say how hard it tried.
        let c = &self.config;
        let effort = match (c.iterations, c.restarts.max(1)) {
            (100, 1) => String::new(),
            (it, 1) => format!(" ({it} it.)"),
            (it, r) => format!(" ({it} it., {r} runs)"),
        };
        format!(
            "APGD-{loss}-{} eps={}{effort}",
            c.norm.name(),
            super::fmt_eps(c.eps)
        )
    }

    fn norm(&self) -> Norm {
        self.config.norm
    }

    fn eps(&self) -> Option<f32> {
        Some(self.config.eps)
    }

    fn supports_targets(&self) -> bool {
        true
    }

    fn perturb(
        &self,
        model: &AttackModel,
        x: &[f32],
        labels: &[usize],
        targets: Option<&[usize]>,
        seed: u64,
    ) -> Result<Vec<f32>> {
        let per = model.image_len();
        let cfg = ApgdConfig {
            seed,
            ..self.config
        };
        if let Some(t) = targets {
            let obj = ClassifierObjective {
                model,
                labels,
                loss: self.loss,
                targets: Some(t),
            };
            return Ok(apgd(&obj, x, per, &cfg)?.adv);
        }
        if self.targets == 0 || self.loss == ApgdLoss::CrossEntropy {
            let obj = ClassifierObjective {
                model,
                labels,
                loss: self.loss,
                targets: None,
            };
            return Ok(apgd(&obj, x, per, &cfg)?.adv);
        }
        // APGD-T: the most likely wrong classes in turn, each on the images still unbroken.
        let k = model.classes();
        let logits = model.logits(x);
        let n = labels.len();
        let order = super::ranked_wrong_classes(&logits, labels, k);
        let mut adv = x.to_vec();
        let mut broken = vec![false; n];
        // `t` is the rank of the target class in every image's own ordering.
        #[allow(clippy::needless_range_loop)]
        for t in 0..self.targets.min(k - 1) {
            let todo: Vec<usize> = (0..n).filter(|&i| !broken[i]).collect();
            if todo.is_empty() {
                break;
            }
            let xs = gather_images(x, &todo, per);
            let ls: Vec<usize> = todo.iter().map(|&i| labels[i]).collect();
            let ts: Vec<usize> = todo.iter().map(|&i| order[i][t]).collect();
            let obj = ClassifierObjective {
                model,
                labels: &ls,
                loss: ApgdLoss::Dlr,
                targets: Some(&ts),
            };
            let r = apgd(
                &obj,
                &xs,
                per,
                &ApgdConfig {
                    seed: seed.wrapping_add(t as u64),
                    ..cfg
                },
            )?;
            // Keep a candidate that is misclassified at all (the untargeted goal).
            let pred = model.predict(&r.adv);
            for (r_i, &i) in todo.iter().enumerate() {
                if pred[r_i] != labels[i] || t == 0 {
                    row_mut(&mut adv, i, per).copy_from_slice(row(&r.adv, r_i, per));
                }
                broken[i] = pred[r_i] != labels[i];
            }
        }
        Ok(adv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_schedule_matches_the_paper() {
        // p = 0, 0.22, 0.41, 0.57, 0.7, 0.8, 0.87, 0.93, 0.99, 1.05 -> iterations for 100.
        assert_eq!(checkpoints(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
    }

    struct Quadratic;
    impl Objective for Quadratic {
        // -(x - 0.9)^2 summed: best at 0.9 per pixel.
        fn eval(&self, x: &[f32], idx: &[usize]) -> Result<ObjectiveEval> {
            let per = x.len() / idx.len();
            Ok(ObjectiveEval {
                value: x
                    .chunks(per)
                    .map(|r| -r.iter().map(|v| (v - 0.9).powi(2)).sum::<f32>())
                    .collect(),
                grad: x.iter().map(|v| -2.0 * (v - 0.9)).collect(),
                reached: vec![false; idx.len()],
            })
        }
    }

    #[test]
    fn stays_in_the_ball_and_climbs() {
        let x0 = vec![0.5f32; 8];
        for (norm, eps) in [(Norm::Linf, 0.1f32), (Norm::L2, 0.2)] {
            let cfg = ApgdConfig {
                iterations: 30,
                ..ApgdConfig::new(norm, eps)
            };
            let r = apgd(&Quadratic, &x0, 4, &cfg).unwrap();
            for (a, b) in r.adv.chunks(4).zip(x0.chunks(4)) {
                let d: Vec<f32> = a.iter().zip(b).map(|(a, b)| a - b).collect();
                assert!(norm.of(&d) <= eps as f64 + 1e-5, "{norm:?} {d:?}");
            }
            // The optimum inside the ball is the boundary point towards 0.9.
            let best_possible = match norm {
                Norm::Linf => -4.0 * 0.3f32.powi(2),
                _ => -4.0 * (0.4f32 - 0.1).powi(2),
            };
            assert!(
                (r.best[0] - best_possible).abs() < 1e-3,
                "{norm:?} {}",
                r.best[0]
            );
        }
    }
}
