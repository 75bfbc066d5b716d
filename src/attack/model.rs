//! The classifier as attacks see it: batched queries and input gradients on flat buffers.

use burn::tensor::Tensor;

use crate::backend::Device;
use crate::model::{Classifier, Denoiser};
use crate::util::row;
use crate::util::{cross_entropy_rows, one_hot, tensor4, to_vec};

/// A frozen classifier with a no-gradient copy for queries and an autodiff copy for input
/// gradients, optionally behind a denoiser (`C(clamp(D(x), 0, 1))`, see
/// [`AttackModel::denoised`]). Images are flat `N x C x H x W` buffers of one fixed image shape.
#[derive(Debug, Clone)]
pub struct AttackModel {
    query: Classifier,
    grad: Classifier,
    front_query: Option<Denoiser>,
    front_grad: Option<Denoiser>,
    plain: Device,
    ad: Device,
    shape: [usize; 3],
    classes: usize,
    /// Number of images sent through the network so far (queries and gradients).
    pub evaluations: std::cell::Cell<u64>,
}

/// Which loss an input gradient is taken of.
#[derive(Debug, Clone, Copy)]
pub enum LossKind {
    /// Cross-entropy from log-softmax against the given labels (untargeted: ascend it).
    CrossEntropy,
    /// Carlini-Wagner margin `Z_y - max_{k != y} Z_k` (descend it to fool).
    Margin,
    /// The logit of the given class.
    Logit,
}

impl AttackModel {
    /// Wraps a classifier; `classifier` may live on any device.
    pub fn new(classifier: &Classifier, device: &Device) -> Self {
        let plain = device.clone().inner();
        let ad = plain.clone().autodiff();
        AttackModel {
            query: classifier.clone().to_device(&plain).valid(),
            grad: classifier.clone().to_device(&ad).frozen(),
            front_query: None,
            front_grad: None,
            plain,
            ad,
            shape: classifier.input_shape(),
            classes: classifier.num_classes(),
            evaluations: std::cell::Cell::new(0),
        }
    }

    /// The classifier behind a denoiser: the attacked function is `C(clamp(D(x), 0, 1))`, with
    /// gradients through the denoiser (in inference mode) and the clamp.
    pub fn denoised(classifier: &Classifier, denoiser: &Denoiser, device: &Device) -> Self {
        let mut m = Self::new(classifier, device);
        m.front_query = Some(denoiser.clone().to_device(&m.plain).frozen());
        m.front_grad = Some(denoiser.clone().to_device(&m.ad).frozen());
        m
    }

    fn query_logits(&self, x: Tensor<4>) -> Tensor<2> {
        match &self.front_query {
            Some(d) => self.query.logits(d.forward(x).clamp(0.0, 1.0)),
            None => self.query.logits(x),
        }
    }

    fn grad_logits(&self, x: Tensor<4>) -> Tensor<2> {
        match &self.front_grad {
            Some(d) => self.grad.logits(d.forward(x).clamp(0.0, 1.0)),
            None => self.grad.logits(x),
        }
    }

    /// `[C, H, W]` of the images.
    pub fn image_shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    fn tensor(&self, x: &[f32], device: &Device) -> Tensor<4> {
        let n = x.len() / self.image_len();
        let [c, h, w] = self.shape;
        tensor4(x.to_vec(), [n, c, h, w], device)
    }

    /// Logits, `N x classes`, row-major.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        // Large query batches are split to bound memory (each part counts itself).
        let chunk = 4096 * self.image_len();
        if x.len() > chunk {
            return x.chunks(chunk).flat_map(|c| self.logits(c)).collect();
        }
        let n = x.len() / self.image_len();
        self.evaluations.set(self.evaluations.get() + n as u64);
        to_vec(self.query_logits(self.tensor(x, &self.plain)))
    }

    /// Predicted classes.
    pub fn predict(&self, x: &[f32]) -> Vec<usize> {
        crate::util::argmax_rows(&self.logits(x), self.classes)
    }

    /// Per-image loss and its gradient with respect to the input, for the given labels (the
    /// class of [`LossKind::Logit`]). Returns `(loss per image, gradient)`.
    pub fn loss_grad(&self, x: &[f32], labels: &[usize], kind: LossKind) -> (Vec<f32>, Vec<f32>) {
        let n = labels.len();
        self.evaluations.set(self.evaluations.get() + n as u64);
        let xt = self.tensor(x, &self.ad).require_grad();
        let logits = self.grad_logits(xt.clone());
        let target = one_hot(labels, self.classes, &self.ad);
        let per: Tensor<1> = match kind {
            LossKind::CrossEntropy => cross_entropy_rows(logits, target),
            LossKind::Logit => (logits * target).sum_dim(1).reshape([n]),
            LossKind::Margin => crate::util::margin_rows(logits, target),
        };
        let grads = per.clone().sum().backward();
        let g = xt.grad(&grads).expect("input gradient");
        (to_vec(per.inner()), to_vec(g))
    }

    /// The gradient (to ascend) of `KL(p || softmax(f(x)))` with respect to `x`, for reference
    /// distributions `p` (`N x classes`, row-major): the inner maximisation of TRADES.
    pub fn kl_grad(&self, x: &[f32], reference: &[f32]) -> Vec<f32> {
        let n = reference.len() / self.classes;
        self.evaluations.set(self.evaluations.get() + n as u64);
        let xt = self.tensor(x, &self.ad).require_grad();
        let logits = self.grad_logits(xt.clone());
        let p: Tensor<2> = Tensor::from_data(
            burn::tensor::TensorData::new(reference.to_vec(), [n, self.classes]),
            &self.ad,
        );
        // KL(p || q) = sum p log p - sum p log q; only the second term depends on x.
        let loss = cross_entropy_rows(logits, p).sum();
        let grads = loss.backward();
        to_vec(xt.grad(&grads).expect("input gradient"))
    }

    /// Class probabilities, `N x classes`, row-major.
    pub fn probabilities(&self, x: &[f32]) -> Vec<f32> {
        let logits = self.logits(x);
        let k = self.classes;
        let mut out = Vec::with_capacity(logits.len());
        for row in logits.chunks(k) {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
            let s: f32 = e.iter().sum();
            out.extend(e.iter().map(|v| v / s));
        }
        out
    }

    /// Cross-entropy per image against `labels`, its input gradient, and the prediction, from
    /// one forward pass.
    pub fn ce_grad(&self, x: &[f32], labels: &[usize]) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
        let n = labels.len();
        self.evaluations.set(self.evaluations.get() + n as u64);
        let xt = self.tensor(x, &self.ad).require_grad();
        let logits = self.grad_logits(xt.clone());
        let pred = crate::util::argmax_rows(&to_vec(logits.clone().inner()), self.classes);
        let target = one_hot(labels, self.classes, &self.ad);
        let per: Tensor<1> = cross_entropy_rows(logits, target);
        let grads = per.clone().sum().backward();
        let g = xt.grad(&grads).expect("input gradient");
        (to_vec(per.inner()), to_vec(g), pred)
    }

    /// The DLR loss of Croce and Hein (to ascend), its input gradient and the prediction.
    /// Untargeted: `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`; targeted at `t`:
    /// `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`, with `z_pi` the sorted logits.
    pub fn dlr_grad(
        &self,
        x: &[f32],
        labels: &[usize],
        targets: Option<&[usize]>,
    ) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
        let n = labels.len();
        let k = self.classes;
        self.evaluations.set(self.evaluations.get() + n as u64);
        let xt = self.tensor(x, &self.ad).require_grad();
        let logits = self.grad_logits(xt.clone());
        let values = to_vec(logits.clone().inner());
        let pred = crate::util::argmax_rows(&values, k);
        // The sorted positions are piecewise constant: pick them from the values, then select
        // the logits with one-hot masks so the gradient flows through the chosen entries.
        let mut other = Vec::with_capacity(n);
        let mut p1 = Vec::with_capacity(n);
        let mut p3 = Vec::with_capacity(n);
        let mut p4 = Vec::with_capacity(n);
        for i in 0..n {
            let row = row(&values, i, k);
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            p1.push(order[0]);
            p3.push(order[2.min(k - 1)]);
            p4.push(order[3.min(k - 1)]);
            other.push(match targets {
                Some(t) => t[i],
                None => *order
                    .iter()
                    .find(|&&c| c != labels[i])
                    .expect("two classes"),
            });
        }
        let pick = |idx: &[usize]| (logits.clone() * one_hot(idx, k, &self.ad)).sum_dim(1);
        let zy = pick(labels);
        let zo = pick(&other);
        let denom = match targets {
            Some(_) => pick(&p1) - (pick(&p3) + pick(&p4)).mul_scalar(0.5),
            None => pick(&p1) - pick(&p3),
        };
        let per: Tensor<1> = ((zy - zo).neg() / denom.add_scalar(1e-12)).reshape([n]);
        let grads = per.clone().sum().backward();
        let g = xt.grad(&grads).expect("input gradient");
        (to_vec(per.inner()), to_vec(g), pred)
    }

    /// Gradients of every class logit (the Jacobian), `classes x N x image_len`, plus the logits.
    pub fn jacobian(&self, x: &[f32]) -> (Vec<f32>, Vec<Vec<f32>>) {
        let n = x.len() / self.image_len();
        let mut rows = Vec::with_capacity(self.classes);
        let mut logits = Vec::new();
        for k in 0..self.classes {
            let (l, g) = self.loss_grad(x, &vec![k; n], LossKind::Logit);
            if k == 0 {
                logits = vec![0f32; n * self.classes];
            }
            for i in 0..n {
                logits[i * self.classes + k] = l[i];
            }
            rows.push(g);
        }
        (logits, rows)
    }
}
