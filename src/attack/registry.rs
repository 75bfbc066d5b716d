//! Every attack by name, with its defaults in one place: the CLI, the pipeline and the tests
//! build attacks here.
//!
//! ```
//! use defed::attack::{AttackKind, AttackSettings, Norm, build_attack};
//!
//! let pgd = build_attack(AttackKind::Pgd, Norm::L2, Some(1.5), &AttackSettings::default())?;
//! assert_eq!(pgd.name(), "PGD-L2 eps=1.5");
//! # Ok::<(), defed::Error>(())
//! ```

use super::{Attack, CwL2, CwLinf, DeepFool, Fgsm, HopSkipJump, Jsma, Norm, Pgd, Square};
use crate::error::{Error, Result};

/// The attacks defed implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttackKind {
    /// Fast Gradient Sign Method (Linf or L2).
    Fgsm,
    /// Projected Gradient Descent (L1, L2 or Linf).
    Pgd,
    /// DeepFool (L2).
    Deepfool,
    /// Jacobian Saliency Map Attack (L0).
    Jsma,
    /// Carlini-Wagner Linf.
    CwLinf,
    /// Carlini-Wagner L2.
    CwL2,
    /// HopSkipJump, decision-based (L2 or Linf).
    Hsj,
    /// Square Attack, score-based (Linf).
    Square,
}

impl AttackKind {
    /// Every kind.
    pub const ALL: [AttackKind; 8] = [
        AttackKind::Fgsm,
        AttackKind::Pgd,
        AttackKind::Deepfool,
        AttackKind::Jsma,
        AttackKind::CwLinf,
        AttackKind::CwL2,
        AttackKind::Hsj,
        AttackKind::Square,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Fgsm => "fgsm",
            AttackKind::Pgd => "pgd",
            AttackKind::Deepfool => "deepfool",
            AttackKind::Jsma => "jsma",
            AttackKind::CwLinf => "cw-linf",
            AttackKind::CwL2 => "cw-l2",
            AttackKind::Hsj => "hsj",
            AttackKind::Square => "square",
        }
    }

    /// The norms the attack works in; the first is its own.
    pub fn norms(self) -> &'static [Norm] {
        match self {
            AttackKind::Fgsm => &[Norm::Linf, Norm::L2],
            AttackKind::Pgd => &[Norm::Linf, Norm::L2, Norm::L1],
            AttackKind::Deepfool | AttackKind::CwL2 => &[Norm::L2],
            AttackKind::Jsma => &[Norm::L0],
            AttackKind::CwLinf | AttackKind::Square => &[Norm::Linf],
            AttackKind::Hsj => &[Norm::L2, Norm::Linf],
        }
    }

    /// Whether the attack has a budget (`eps`).
    pub fn has_budget(self) -> bool {
        !matches!(
            self,
            AttackKind::Deepfool | AttackKind::Jsma | AttackKind::CwL2 | AttackKind::Hsj
        )
    }
}

impl std::str::FromStr for AttackKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        AttackKind::ALL
            .into_iter()
            .find(|k| k.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!(
                    "unknown attack {s:?}; one of {}",
                    AttackKind::ALL.map(|k| k.name()).join(", ")
                )
            })
    }
}

/// Settings that override an attack's defaults (`None`: the attack's own).
#[derive(Debug, Clone, PartialEq)]
pub struct AttackSettings {
    /// PGD step size (defaults: 0.01 Linf, 0.1 L2, 4 L1).
    pub step: Option<f32>,
    /// Iterations (defaults: PGD 40 Linf / 100 L1-L2, CW-Linf 200, CW-L2 and HSJ their own,
    /// Square 100, DeepFool 100).
    pub iterations: Option<usize>,
    /// PGD: start from a random point in the ball.
    pub random_init: bool,
    /// PGD: independent restarts.
    pub restarts: usize,
    /// JSMA theta.
    pub theta: f32,
    /// JSMA gamma.
    pub gamma: f32,
}

impl Default for AttackSettings {
    fn default() -> Self {
        let jsma = Jsma::default();
        AttackSettings {
            step: None,
            iterations: None,
            random_init: false,
            restarts: 1,
            theta: jsma.theta,
            gamma: jsma.gamma,
        }
    }
}

/// The default budget of an attack in `norm` (for those that have one).
pub fn default_eps(kind: AttackKind, norm: Norm) -> Option<f32> {
    match (kind, norm) {
        (AttackKind::Fgsm, Norm::L2) => Some(2.0),
        (AttackKind::Fgsm, _) => Some(0.3),
        (AttackKind::Pgd, Norm::Linf) => Some(0.3),
        (AttackKind::Pgd, Norm::L2) => Some(2.0),
        (AttackKind::Pgd, Norm::L1) => Some(10.0),
        (AttackKind::CwLinf | AttackKind::Square, _) => Some(64.0 / 256.0),
        _ => None,
    }
}

/// The adaptive evaluation's non-adaptive baseline: PGD on the bare classifier, transferred to
/// the defended model (Linf: step eps/10, 40 iterations; L2 and L1: step eps/20, 100
/// iterations; no random start).
pub fn transfer_pgd(norm: Norm, eps: f32) -> Pgd {
    match norm {
        Norm::Linf => Pgd {
            step: eps / 10.0,
            ..Pgd::linf(eps)
        },
        _ => Pgd {
            norm,
            eps,
            step: eps / 20.0,
            iterations: 100,
            random_init: false,
            restarts: 1,
            early_stop: false,
        },
    }
}

/// Builds an attack: `eps` (or the attack's default budget) in `norm`, other settings from
/// `s`. An attack in a norm it does not work in is an error.
pub fn build_attack(
    kind: AttackKind,
    norm: Norm,
    eps: Option<f32>,
    s: &AttackSettings,
) -> Result<Box<dyn Attack>> {
    // Attacks with one norm ignore the norm asked for (the CLI's default is Linf).
    let norm = match kind.norms() {
        [only] => *only,
        norms if norms.contains(&norm) => norm,
        norms => {
            return Err(Error::Invalid(format!(
                "{} works in {}, not {}",
                kind.name(),
                norms
                    .iter()
                    .map(|n| n.name())
                    .collect::<Vec<_>>()
                    .join(" or "),
                norm.name()
            )));
        }
    };
    if let Some(e) = eps
        && !(e.is_finite() && e > 0.0)
    {
        return Err(Error::Invalid(format!("eps must be > 0, got {e}")));
    }
    let eps = eps.or(default_eps(kind, norm));
    let budget = || eps.expect("attacks with a budget have a default");
    let with_iterations = |default: usize| s.iterations.unwrap_or(default);
    Ok(match kind {
        AttackKind::Fgsm => Box::new(Fgsm {
            eps: budget(),
            norm,
        }),
        AttackKind::Pgd => {
            let (step, iterations) = match norm {
                Norm::Linf => (0.01, 40),
                Norm::L2 => (0.1, 100),
                _ => (4.0, 100),
            };
            Box::new(Pgd {
                norm,
                eps: budget(),
                step: s.step.unwrap_or(step),
                iterations: with_iterations(iterations),
                random_init: s.random_init,
                restarts: s.restarts,
                early_stop: false,
            })
        }
        AttackKind::Deepfool => Box::new(DeepFool {
            max_iter: with_iterations(DeepFool::default().max_iter),
            ..DeepFool::default()
        }),
        AttackKind::Jsma => Box::new(Jsma {
            theta: s.theta,
            gamma: s.gamma,
        }),
        AttackKind::CwLinf => {
            let mut c = CwLinf::new(budget());
            c.iterations = with_iterations(c.iterations);
            Box::new(c)
        }
        AttackKind::CwL2 => {
            let mut c = CwL2::default();
            c.iterations = with_iterations(c.iterations);
            Box::new(c)
        }
        AttackKind::Hsj => {
            let mut h = HopSkipJump::new(norm);
            h.iterations = with_iterations(h.iterations);
            Box::new(h)
        }
        AttackKind::Square => {
            let mut q = Square::new(budget());
            q.iterations = with_iterations(q.iterations);
            Box::new(q)
        }
    })
}

/// The original paper's whole attack grid (JSMA; PGD-L1 at 5-40; PGD-L2 at 0.125-2; DeepFool;
/// CW-Linf and Square at 8-128 / 256; HopSkipJump L2 and Linf), plus FGSM and PGD-Linf 0.3.
pub fn paper_grid(s: &AttackSettings) -> Result<Vec<Box<dyn Attack>>> {
    use AttackKind::*;
    let mut v = vec![build_attack(Jsma, Norm::L0, None, s)?];
    for eps in [5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0] {
        v.push(build_attack(Pgd, Norm::L1, Some(eps), s)?);
    }
    for eps in [0.125, 0.25, 0.3125, 0.5, 1.0, 1.5, 2.0] {
        v.push(build_attack(Pgd, Norm::L2, Some(eps), s)?);
    }
    v.push(build_attack(Deepfool, Norm::L2, None, s)?);
    for k in [8.0, 16.0, 32.0, 64.0, 80.0, 128.0] {
        v.push(build_attack(CwLinf, Norm::Linf, Some(k / 256.0), s)?);
        v.push(build_attack(Square, Norm::Linf, Some(k / 256.0), s)?);
    }
    v.push(build_attack(Hsj, Norm::L2, None, s)?);
    v.push(build_attack(Hsj, Norm::Linf, None, s)?);
    v.push(build_attack(Fgsm, Norm::Linf, Some(0.3), s)?);
    v.push(build_attack(Pgd, Norm::Linf, Some(0.3), s)?);
    Ok(v)
}

/// The pipeline's eight attacks at the budgets usual for the data: MNIST's defaults, or for
/// natural colour images (`colour`: SVHN, CIFAR-10) Linf 8/255 (FGSM, PGD, Carlini-Wagner,
/// Square) and L2 0.5 (PGD), as in the robustness literature for these sets.
pub(crate) fn pipeline_suite_for(colour: bool) -> Vec<Box<dyn Attack>> {
    let s = AttackSettings::default();
    let eps = |k: AttackKind, n: Norm| match (colour, k, n) {
        (false, _, _) => None,
        (true, AttackKind::Pgd, Norm::L2) => Some(0.5),
        (true, k, _) if k.has_budget() => Some(8.0 / 255.0),
        _ => None,
    };
    [
        (AttackKind::Fgsm, Norm::Linf),
        (AttackKind::Pgd, Norm::Linf),
        (AttackKind::Pgd, Norm::L2),
        (AttackKind::Deepfool, Norm::L2),
        (AttackKind::Jsma, Norm::L0),
        (AttackKind::CwLinf, Norm::Linf),
        (AttackKind::Square, Norm::Linf),
        (AttackKind::Hsj, Norm::L2),
    ]
    .into_iter()
    .map(|(k, n)| build_attack(k, n, eps(k, n), &s).expect("the pipeline's attacks are valid"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_norms_are_checked() {
        for k in AttackKind::ALL {
            assert_eq!(k.name().parse::<AttackKind>().unwrap(), k);
            let a = build_attack(k, k.norms()[0], None, &AttackSettings::default()).unwrap();
            assert_eq!(a.norm(), k.norms()[0]);
            assert_eq!(a.eps().is_some(), k.has_budget(), "{}", k.name());
        }
        assert!("nope".parse::<AttackKind>().is_err());
        let e = build_attack(AttackKind::Pgd, Norm::L0, None, &AttackSettings::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("not L0"), "{e}");
        assert!(
            build_attack(
                AttackKind::Fgsm,
                Norm::Linf,
                Some(-1.0),
                &Default::default()
            )
            .is_err()
        );
        assert_eq!(paper_grid(&AttackSettings::default()).unwrap().len(), 32);
        assert_eq!(pipeline_suite_for(false).len(), 8);
    }
}
