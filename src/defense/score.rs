//! The adversarial score of an image under one denoiser:
//! `s(x) = alpha * CE(C(clamp(D(x), 0, 1)), argmax C(x)) + mean((x - clamp(D(x), 0, 1))^2)`.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

use crate::model::{Classifier, Denoiser};
use crate::util::{argmax_rows, one_hot, to_vec};

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

/// Computes the adversarial score of each image of a batch.
pub fn adversarial_score(
    classifier: &Classifier,
    denoiser: &Denoiser,
    alpha: f32,
    x: Tensor<4>,
) -> AdvScore {
    let n = x.dims()[0];
    let classes = classifier.num_classes();
    let logits = to_vec(classifier.logits(x.clone()));
    let pred = argmax_rows(&logits, classes);
    let denoised = denoiser.forward(x.clone()).clamp(0.0, 1.0);
    let logp = log_softmax(classifier.logits(denoised.clone()), 1);
    let target = one_hot(&pred, classes, &x.device());
    let class = to_vec((logp * target).sum_dim(1).neg().reshape([n]));
    let vision = to_vec(crate::eval::mse_per_image(x, denoised));
    let total = class
        .iter()
        .zip(&vision)
        .map(|(c, v)| alpha * c + v)
        .collect();
    AdvScore {
        total,
        class,
        vision,
    }
}
