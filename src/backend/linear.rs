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

use rayon::prelude::*;

use super::flex::{all_f32, flex_tensor, on_flex, values};
use super::kernels::{SendPtr, uninit};

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
        let (m, k, n) = (x.shape()[0], x.shape()[1], weight.shape()[1]);
        if !all_f32(&[&x, &weight, &bias]) {
            let y = Self::float_matmul(x, weight);
            return Self::float_add(y, Self::float_reshape(bias, Shape::new([1, n])));
        }
        let (x, w, b) = (values(&x), values(&weight), values(&bias));
        // Every element is written by the products (read_dst false); the bias is added after,
        // as burn's `Linear` does (bias first would change the rounding with the batch size:
        // gemm folds the destination in differently for one row).
        let mut y = uninit(m * n);
        // y[:, cols] = x @ w[:, cols], blocks of columns in parallel: gemm's own split keeps
        // one thread busy at batch 64.
        let blocks = column_blocks(n);
        let yp = SendPtr(y.as_mut_ptr());
        blocks.into_par_iter().for_each(|(c0, c1)| {
            // SAFETY: each block writes columns c0..c1 of y only; the operands are read in
            // bounds (m x k, k x n, m x n row-major).
            unsafe {
                product(
                    (m, c1 - c0, k),
                    (yp.get().add(c0), n),
                    (x.as_ptr(), 1, k),
                    (w.as_ptr().add(c0), 1, n),
                    gemm::Parallelism::None,
                )
            }
        });
        for row in y.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(b.iter()) {
                *v += b;
            }
        }
        flex_tensor(y, vec![m, n])
    }

    fn fast_linear_x_backward(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (k, n, m) = (weight.shape()[0], weight.shape()[1], grad.shape()[0]);
        if !all_f32(&[&weight, &grad]) {
            let t = Self::float_matmul(weight, Self::float_transpose(grad));
            return Self::float_transpose(t);
        }
        let (w, g) = (values(&weight), values(&grad));
        // dx^T = w @ dy^T, row-major (gemm orients the problem by its output's layout, so
        // writing dx through transposed strides would bring back the slow form), then
        // transposed into dx.
        let mut dxt = uninit(k * m);
        // SAFETY: dxt is k x m (read_dst false: every element written), w is k x n, dy m x n.
        unsafe {
            product(
                (k, m, n),
                (dxt.as_mut_ptr(), m),
                (w.as_ptr(), 1, n),
                (g.as_ptr(), n, 1),
                gemm::Parallelism::Rayon(0),
            )
        };
        let mut dx = uninit(m * k);
        dx.par_chunks_mut(k).enumerate().for_each(|(j, row)| {
            for (i, v) in row.iter_mut().enumerate() {
                *v = dxt[i * m + j];
            }
        });
        flex_tensor(dx, vec![m, k])
    }
}

/// `dst = lhs @ rhs` for an `m x n` row-major `dst` (rows `dst.1` apart), `m x k` `lhs` and
/// `k x n` `rhs` given as (pointer, column stride, row stride); every element of `dst` written.
///
/// # Safety
/// Every element the shapes and strides address must be in bounds; `dst` must not overlap
/// the operands.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, usize),
    (lhs, lhs_cs, lhs_rs): (*const f32, usize, usize),
    (rhs, rhs_cs, rhs_rs): (*const f32, usize, usize),
    parallelism: gemm::Parallelism,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Column ranges for the forward product's parallel blocks: a few per thread, multiples of 16.
fn column_blocks(n: usize) -> Vec<(usize, usize)> {
    let parts = rayon::current_num_threads() * 2;
    let width = n.div_ceil(parts).div_ceil(16) * 16;
    (0..n)
        .step_by(width.max(16))
        .map(|c| (c, (c + width.max(16)).min(n)))
        .collect()
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

#[cfg(test)]
mod speed {
    use super::*;
    use burn::tensor::Distribution;

    /// `cargo test --release --lib linear::speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_timings() {
        let d = crate::backend::default_device();
        let x = Tensor::<2>::random([64, 3136], Distribution::Default, &d);
        let w = Tensor::<2>::random([3136, 1024], Distribution::Default, &d);
        let b = Tensor::<1>::random([1024], Distribution::Default, &d);
        let dy = Tensor::<2>::random([64, 1024], Distribution::Default, &d);
        let time = |name: &str, f: &dyn Fn() -> Tensor<2>| {
            let _ = f().into_data();
            let t = std::time::Instant::now();
            for _ in 0..20 {
                let _ = f().into_data();
            }
            println!("{name:10} {:.2} ms", t.elapsed().as_secs_f64() * 50.0);
        };
        let dispatch = <burn::backend::Dispatch as LinearBackend>::fast_linear;
        time("burn fwd", &|| {
            x.clone().matmul(w.clone()) + b.clone().unsqueeze()
        });
        time("fast fwd", &|| {
            Tensor::from_dispatch(dispatch(
                x.clone().into_dispatch(),
                w.clone().into_dispatch(),
                b.clone().into_dispatch(),
            ))
        });
        time("burn dx", &|| dy.clone().matmul(w.clone().transpose()));
        time("fast dx", &|| {
            Tensor::from_dispatch(
                <burn::backend::Dispatch as LinearBackend>::fast_linear_x_backward(
                    w.clone().into_dispatch(),
                    dy.clone().into_dispatch(),
                ),
            )
        });
        time("burn dw", &|| x.clone().transpose().matmul(dy.clone()));
    }
}

#[cfg(test)]
mod batch_invariance {
    use super::*;
    use burn::tensor::Distribution;

    /// A row's output does not depend on the other rows of the batch on LeNet's layers (the
    /// server answers one image at a time what the library computes for a batch, and its
    /// tests compare them exactly). On the Madry CNN's layers (k = 3136 and 1024) gemm picks
    /// its kernels by the batch size, so there, as with burn's own matrix product, the last
    /// bits may differ.
    #[test]
    fn rows_equal_alone_and_in_a_batch() {
        let d = crate::backend::default_device();
        for (k, n) in [(256, 120), (120, 84), (84, 10)] {
            let x = Tensor::<2>::random([5, k], Distribution::Default, &d);
            let w = Tensor::<2>::random([k, n], Distribution::Default, &d);
            let b = Tensor::<1>::random([n], Distribution::Default, &d);
            let run = |x: Tensor<2>| {
                crate::util::to_vec(Tensor::<2>::from_dispatch(
                    <burn::backend::Dispatch as LinearBackend>::fast_linear(
                        x.into_dispatch(),
                        w.clone().into_dispatch(),
                        b.clone().into_dispatch(),
                    ),
                ))
            };
            let all = run(x.clone());
            for r in 0..5 {
                let one = run(x.clone().slice([r..r + 1, 0..k]));
                assert_eq!(one, all[r * n..(r + 1) * n], "{k}x{n} row {r}");
            }
        }
    }
}
