//! A fully connected layer whose input gradient reads both operands in their stored order.
//!
//! burn differentiates `x @ w` (`x` `[n, in]`, `w` `[in, out]`, burn's `Linear` layout) into
//! `dy @ w^T`: a product with a column-major right operand, which flex's matrix product (the
//! `gemm` crate) runs at under half its speed on the Madry CNN's 3136 x 1024 layer at batch 64
//! (5.8 against 2.8 ms on one thread; `cargo run --release --example profile_ops matmul`). Here
//! the input gradient is `(w @ dy^T)^T`, the same sums in a layout both operands are read in
//! order. The forward pass and the weight and bias gradients are burn's own. An adversarial
//! training step takes the input gradient through this layer eleven times per batch.
//! On devices other than `flex` [`linear`] is burn's `Linear::forward`.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, DType, Flex, TensorMetadata, backend_extension};
use burn::nn::Linear;
use burn::tensor::{Shape, Tensor};

use super::flex::on_flex;

/// Backends with the fully connected layer and its input gradient.
#[backend_extension(Flex, Autodiff)]
pub trait LinearBackend: Backend {
    /// `x @ weight + bias` for `x` `[n, in]`, `weight` `[in, out]` and `bias` `[out]`.
    fn fast_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// The input gradient of [`fast_linear`](LinearBackend::fast_linear), `grad @ weight^T`, computed
    /// as `(weight @ grad^T)^T`.
    fn fast_linear_x_backward(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl LinearBackend for Flex {
    fn fast_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let out = bias.shape()[0];
        let y = Self::float_matmul(x, weight);
        Self::float_add(y, Self::float_reshape(bias, Shape::new([1, out])))
    }

    fn fast_linear_x_backward(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let t = Self::float_matmul(weight, Self::float_transpose(grad));
        Self::float_transpose(t)
    }
}

/// The backward node; its state is the input and the weight.
#[derive(Debug)]
struct LinearGrad;

impl<B: Backend + LinearBackend> Backward<B, 3> for LinearGrad {
    type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::fast_linear_x_backward(weight, grad.clone()));
        }
        if let Some(node) = node_w {
            let g = B::float_matmul(B::float_transpose(x), grad.clone());
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_b {
            let out = grad.shape()[1];
            let g = B::float_reshape(B::float_sum_dim(grad, 0), Shape::new([out]));
            grads.register::<B>(node.id, g);
        }
    }
}

impl<B: Backend + LinearBackend, C: CheckpointStrategy> LinearBackend for Autodiff<B, C> {
    fn fast_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match LinearGrad
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, w, b) = (
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                );
                let out = B::fast_linear(x.clone(), w.clone(), b);
                prep.finish((x, w), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fast_linear(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    /// The gradient's value, not tracked further (nothing here differentiates twice).
    fn fast_linear_x_backward(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::fast_linear_x_backward(
            Self::inner(weight),
            Self::inner(grad),
        ))
    }
}

/// `layer.forward(x)` for a batch of vectors `[n, in]`, with the input gradient above on
/// `flex` (f32) and burn's `Linear::forward` elsewhere.
pub fn linear(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    if !on_flex(&x) || x.dtype() != DType::F32 {
        return layer.forward(x);
    }
    let weight = layer.weight.val();
    let bias = match &layer.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([weight.dims()[1]], &x.device()),
    };
    Tensor::from_dispatch(<burn::backend::Dispatch as LinearBackend>::fast_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::autodiff_device;
    use crate::util::to_vec;
    use burn::module::Param;
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    /// Values and the gradients of the input, weight and bias against burn's `Linear`, with
    /// and without a bias, under a weighted loss.
    #[test]
    fn matches_burns_linear() {
        let d = autodiff_device();
        for bias in [true, false] {
            let layer = LinearConfig::new(37, 19).with_bias(bias).init(&d);
            let x = Tensor::<2>::random([5, 37], Distribution::Default, &d);
            let weights = Tensor::<2>::random([5, 19], Distribution::Default, &d);
            let run = |fast: bool| {
                let x = x.clone().require_grad();
                let layer = Linear {
                    weight: Param::from_tensor(layer.weight.val()),
                    bias: layer.bias.as_ref().map(|b| Param::from_tensor(b.val())),
                };
                let y = if fast {
                    linear(&layer, x.clone())
                } else {
                    layer.forward(x.clone())
                };
                let grads = (y.clone() * weights.clone()).sum().backward();
                let gx = x.grad(&grads).expect("input gradient");
                let gw = layer.weight.val().grad(&grads).expect("weight gradient");
                let gb = layer
                    .bias
                    .as_ref()
                    .map(|b| to_vec(b.val().grad(&grads).unwrap()));
                (to_vec(y), to_vec(gx), to_vec(gw), gb)
            };
            let (fast, reference) = (run(true), run(false));
            let close = |a: &[f32], b: &[f32]| {
                assert_eq!(a.len(), b.len());
                for (p, q) in a.iter().zip(b) {
                    assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
                }
            };
            close(&fast.0, &reference.0);
            close(&fast.1, &reference.1);
            close(&fast.2, &reference.2);
            assert_eq!(fast.3.is_some(), bias);
            if let (Some(a), Some(b)) = (fast.3, reference.3) {
                close(&a, &b);
            }
        }
    }
}
