//! The adversarial score of an image under one denoiser, defined once:
//! `s(x) = alpha * CE(C(clamp(D(x), 0, 1)), argmax C(x)) + mean((x - clamp(D(x), 0, 1))^2)`.
//!
//! [`score_tensors`] is the definition, on tensors, differentiable on an autodiff device: the
//! defender ([`crate::defense::Defender::scores`]), the adaptive attack (which differentiates
//! it) and [`adversarial_score`] all call it.

use burn::tensor::Tensor;

use crate::model::{Classifier, Denoiser};
use crate::util::{argmax_rows, cross_entropy_rows, one_hot, to_vec};

/// How the denoised image is clamped to `[0, 1]` inside the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    /// The exact clamp (zero gradient where the denoiser's output is outside `[0, 1]`).
    Exact,
    /// Clamped values with the identity's gradient (straight-through, BPDA).
    StraightThrough,
}

/// The score of each image of a batch under one denoiser, with its parts, as tensors.
pub struct ScoreTensors {
    /// `alpha * class + vision`, one per image.
    pub total: Tensor<1>,
    /// Cross-entropy of the classifier on the denoised image against `target`.
    pub class: Tensor<1>,
    /// Mean squared change the denoiser makes.
    pub vision: Tensor<1>,
    /// The classifier's logits on the denoised image.
    pub logits: Tensor<2>,
}

/// The score of a batch `x` (`N x C x H x W`) under `denoiser`, the class part taken against
/// `target` (one-hot `N x classes`: the classifier's own label on `x`, held fixed).
pub fn score_tensors(
    classifier: &Classifier,
    denoiser: &Denoiser,
    alpha: f32,
    x: Tensor<4>,
    target: Tensor<2>,
    clamp: Clamp,
) -> ScoreTensors {
    let out = denoiser.forward(x.clone());
    let denoised = match clamp {
        Clamp::Exact => out.clamp(0.0, 1.0),
        Clamp::StraightThrough => out.clone() + (out.clone().clamp(0.0, 1.0) - out).detach(),
    };
    let logits = classifier.logits(denoised.clone());
    let class = cross_entropy_rows(logits.clone(), target);
    let d = x - denoised;
    let vision: Tensor<1> = (d.clone() * d)
        .flatten::<2>(1, 3)
        .mean_dim(1)
        .squeeze_dim(1);
    ScoreTensors {
        total: class.clone().mul_scalar(alpha) + vision.clone(),
        class,
        vision,
        logits,
    }
}

/// Per-image scores and their two parts.
#[derive(Debug, Clone, PartialEq)]
pub struct AdvScore {
    /// `alpha * class + vision`.
    pub total: Vec<f32>,
    /// Cross-entropy of the classifier on the denoised image against its own prediction on
    /// the input.
    pub class: Vec<f32>,
    /// Mean squared change the denoiser makes.
    pub vision: Vec<f32>,
}

/// Computes the adversarial score of each image of a batch ([`score_tensors`] with the
/// classifier's own labels and the exact clamp).
pub fn adversarial_score(
    classifier: &Classifier,
    denoiser: &Denoiser,
    alpha: f32,
    x: Tensor<4>,
) -> AdvScore {
    let classes = classifier.num_classes();
    let pred = argmax_rows(&to_vec(classifier.logits(x.clone())), classes);
    let target = one_hot(&pred, classes, &x.device());
    let s = score_tensors(classifier, denoiser, alpha, x, target, Clamp::Exact);
    AdvScore {
        total: to_vec(s.total),
        class: to_vec(s.class),
        vision: to_vec(s.vision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defense::{Defender, DefenderDenoiser};
    use crate::model::embedded;

    /// The defender's scores are this definition's, and the straight-through clamp changes
    /// gradients only, not values.
    #[test]
    fn one_definition() {
        let device = crate::default_device();
        let (clf, _) = embedded::default_classifier(&device).unwrap();
        let dens = embedded::default_denoisers(&device).unwrap();
        let data = crate::data::embedded_mnist().take(16);
        let x = data.tensor(0, 16, &device);
        let d = Defender::new(
            clf.clone(),
            dens.iter()
                .map(|(net, meta)| DefenderDenoiser {
                    net: net.clone(),
                    meta: meta.clone(),
                    name: "d".into(),
                })
                .collect(),
            1.0,
        )
        .unwrap();
        let s = d.scores(&data.images, &device).unwrap();
        for (i, (net, _)) in dens.iter().enumerate() {
            let a = adversarial_score(&clf, net, 1.0, x.clone());
            assert_eq!(a.total, s.total[i]);
            assert_eq!(a.class, s.class[i]);
            assert_eq!(a.vision, s.vision[i]);
            let target = one_hot(&s.pred, 10, &device);
            let st = score_tensors(&clf, net, 1.0, x.clone(), target, Clamp::StraightThrough);
            assert_eq!(to_vec(st.total), s.total[i]);
        }
    }
}
