//! Fast Gradient Sign Method (Goodfellow et al., 2015) and its L2 variant.

use super::{Attack, AttackModel, LossKind, Norm, clip01, step_direction};
use crate::error::{Error, Result};

/// One gradient step of size `eps` (Linf: the sign; L2: the unit gradient).
#[derive(Debug, Clone)]
pub struct Fgsm {
    /// Step size and budget.
    pub eps: f32,
    /// Linf or L2.
    pub norm: Norm,
}

impl Attack for Fgsm {
    fn name(&self) -> String {
        format!("FGSM-{} eps={}", self.norm.name(), super::fmt_eps(self.eps))
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
        _seed: u64,
    ) -> Result<Vec<f32>> {
        if !matches!(self.norm, Norm::Linf | Norm::L2) {
            return Err(Error::Invalid("FGSM supports the Linf and L2 norms".into()));
        }
        let per = model.image_len();
        // Targeted: descend the loss of the target; untargeted: ascend the loss of the label.
        let (y, sign) = match targets {
            Some(t) => (t, -1.0f32),
            None => (labels, 1.0),
        };
        let (_, mut g) = model.loss_grad(x, y, LossKind::CrossEntropy);
        let mut out = x.to_vec();
        for (gi, oi) in g.chunks_mut(per).zip(out.chunks_mut(per)) {
            step_direction(gi, self.norm);
            for (o, d) in oi.iter_mut().zip(gi.iter()) {
                *o += sign * self.eps * d;
            }
        }
        clip01(&mut out);
        Ok(out)
    }
}
