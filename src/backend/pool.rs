//! ReLU followed by 2x2 stride-2 max-pooling, fused, as a burn backend extension op.
//!
//! LeNet, the Madry CNN and the SVHN VGG all pool a ReLU. burn runs that as three passes
//! forward (ReLU, pooling with an `i64` index per output) and three backward (a zero-filled
//! input gradient, a scalar scatter through the indices, the ReLU mask); in a PGD training
//! step of the Madry CNN they took about a sixth of the time. Here the forward is one pass over
//! each plane and the backward one pass that writes every input position once, recomputing
//! each window's winner from the saved input (no index tensor). The winner is the first
//! maximum in row-major order, as in burn and PyTorch, so the gradients are the same.
//! On devices other than `flex` the high-level function keeps burn's composition.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, DType, Flex, TensorMetadata, backend_extension};
use burn::tensor::Tensor;
use multiversion::multiversion;
use rayon::prelude::*;

use super::flex::{flex_tensor, on_flex, values};
use super::kernels::uninit;

/// Backends with the fused ReLU + 2x2 stride-2 max-pooling and its input gradient.
#[backend_extension(Flex, Autodiff)]
pub trait ReluPoolBackend: Backend {
    /// `max_pool2d(relu(x))` with a 2x2 window and stride 2 on `[n, c, h, w]` (an odd last
    /// row or column is dropped, as burn's default floor mode does).
    fn relu_max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The input gradient of [`relu_max_pool2`](ReluPoolBackend::relu_max_pool2): each
    /// output's gradient at its window's first maximum when that maximum is positive, zero
    /// everywhere else.
    fn relu_max_pool2_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Index (0..4, row-major) of the first maximum of a window and that maximum; a NaN wins, the
/// last one, as in burn's pooling. Selects, not branches, so the loops over rows vectorise.
#[inline(always)]
fn winner(v: [f32; 4]) -> (u32, f32) {
    let (mut i, mut m) = (0, v[0]);
    for (k, x) in [(1, v[1]), (2, v[2]), (3, v[3])] {
        let take = x > m || x.is_nan();
        m = if take { x } else { m };
        i = if take { k } else { i };
    }
    (i, m)
}

/// Forward over planes of `h x w`: `[ho x wo]` planes of `max(0, window max)`.
pub fn relu_max_pool2_planes(x: &[f32], (h, w): (usize, usize)) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    if ho * wo == 0 {
        return Vec::new();
    }
    // Every output element is assigned below.
    let mut out = uninit(x.len() / (h * w) * ho * wo);
    out.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .for_each(|(dst, src)| pool_plane(src, dst, w, wo));
    out
}

/// One plane of the forward: `dst` is `ho x wo`, `src` has rows `w` long.
#[multiversion(targets = "simd")]
fn pool_plane(src: &[f32], dst: &mut [f32], w: usize, wo: usize) {
    for (y, row) in dst.chunks_exact_mut(wo).enumerate() {
        let r0 = &src[2 * y * w..][..2 * wo];
        let r1 = &src[(2 * y + 1) * w..][..2 * wo];
        for ((o, a), b) in row
            .iter_mut()
            .zip(r0.chunks_exact(2))
            .zip(r1.chunks_exact(2))
        {
            let (_, m) = winner([a[0], a[1], b[0], b[1]]);
            // `max` would turn a NaN into 0; keep it, as relu then pooling does.
            *o = if m > 0.0 || m.is_nan() { m } else { 0.0 };
        }
    }
}

/// Input gradient over planes: `x` is `h x w` per plane, `dy` the pooled planes' gradient.
pub fn relu_max_pool2_planes_backward(x: &[f32], dy: &[f32], (h, w): (usize, usize)) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    // Every input element is assigned below: windows tile the plane; a trailing odd row or
    // column is zeroed.
    let mut out = uninit(x.len());
    if ho * wo == 0 {
        out.iter_mut().for_each(|v| *v = 0.0);
        return out;
    }
    out.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w).zip(dy.par_chunks(ho * wo)))
        .for_each(|(dst, (src, g))| pool_plane_backward(src, g, dst, (h, w)));
    out
}

/// One plane of the input gradient: `src` and `dst` are `h x w`, `g` the pooled gradient.
#[multiversion(targets = "simd")]
fn pool_plane_backward(src: &[f32], g: &[f32], dst: &mut [f32], (h, w): (usize, usize)) {
    let wo = w / 2;
    for (y, gy) in g.chunks_exact(wo).enumerate() {
        let r0 = &src[2 * y * w..][..2 * wo];
        let r1 = &src[(2 * y + 1) * w..][..2 * wo];
        let (d0, d1) = dst[2 * y * w..(2 * y + 2) * w].split_at_mut(w);
        // Blocks of 16 windows through fixed-size arrays, which LLVM turns into vector
        // shuffles and selects; a short last block is zero-padded (its extra windows are
        // computed and dropped).
        let mut x0 = 0;
        while x0 < wo {
            let n = (wo - x0).min(16);
            let (mut a, mut b, mut gv) = ([0f32; 32], [0f32; 32], [0f32; 16]);
            a[..2 * n].copy_from_slice(&r0[2 * x0..2 * (x0 + n)]);
            b[..2 * n].copy_from_slice(&r1[2 * x0..2 * (x0 + n)]);
            gv[..n].copy_from_slice(&gy[x0..x0 + n]);
            let (mut out0, mut out1) = ([0f32; 32], [0f32; 32]);
            for l in 0..16 {
                // The first position holding the maximum takes the gradient.
                let (i, m) = winner([a[2 * l], a[2 * l + 1], b[2 * l], b[2 * l + 1]]);
                let g = if m > 0.0 { gv[l] } else { 0.0 };
                out0[2 * l] = if i == 0 { g } else { 0.0 };
                out0[2 * l + 1] = if i == 1 { g } else { 0.0 };
                out1[2 * l] = if i == 2 { g } else { 0.0 };
                out1[2 * l + 1] = if i == 3 { g } else { 0.0 };
            }
            d0[2 * x0..2 * (x0 + n)].copy_from_slice(&out0[..2 * n]);
            d1[2 * x0..2 * (x0 + n)].copy_from_slice(&out1[..2 * n]);
            x0 += n;
        }
        if w % 2 == 1 {
            d0[w - 1] = 0.0;
            d1[w - 1] = 0.0;
        }
    }
    if h % 2 == 1 {
        dst[(h - 1) * w..].iter_mut().for_each(|v| *v = 0.0);
    }
}

impl ReluPoolBackend for Flex {
    fn relu_max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let s = x.shape().to_vec();
        assert_eq!(x.dtype(), DType::F32, "relu_max_pool2: f32 only");
        let out = relu_max_pool2_planes(&values(&x), (s[2], s[3]));
        flex_tensor(out, vec![s[0], s[1], s[2] / 2, s[3] / 2])
    }

    fn relu_max_pool2_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let s = x.shape().to_vec();
        let out = relu_max_pool2_planes_backward(&values(&x), &values(&grad), (s[2], s[3]));
        flex_tensor(out, s)
    }
}

/// The backward node; its state is the op's input.
#[derive(Debug)]
struct ReluPoolGrad;

impl<B: Backend + ReluPoolBackend> Backward<B, 1> for ReluPoolGrad {
    type State = B::FloatTensorPrimitive;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::relu_max_pool2_backward(ops.state, grad));
        }
    }
}

impl<B: Backend + ReluPoolBackend, C: CheckpointStrategy> ReluPoolBackend for Autodiff<B, C> {
    fn relu_max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match ReluPoolGrad
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let out = B::relu_max_pool2(x.clone());
                prep.finish(x, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::relu_max_pool2(x.into_primitive())),
        }
    }

    /// The gradient's value, not tracked further (nothing here differentiates twice).
    fn relu_max_pool2_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::relu_max_pool2_backward(
            Self::inner(x),
            Self::inner(grad),
        ))
    }
}

/// `max_pool2d(relu(x))` with a 2x2 window and stride 2, fused where the device has it (flex,
/// f32) and through `fallback` (burn's ops) elsewhere.
pub fn relu_max_pool2(x: Tensor<4>, fallback: impl FnOnce(Tensor<4>) -> Tensor<4>) -> Tensor<4> {
    if !on_flex(&x) || x.dtype() != DType::F32 {
        return fallback(x);
    }
    Tensor::from_dispatch(
        <burn::backend::Dispatch as ReluPoolBackend>::relu_max_pool2(x.into_dispatch()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::autodiff_device;
    use crate::util::to_vec;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu;

    fn reference(x: Tensor<4>) -> Tensor<4> {
        MaxPool2dConfig::new([2, 2]).init().forward(relu(x))
    }

    /// Values and input gradients against burn's relu + max_pool2d, even and odd sizes,
    /// with ties (many zeros after the shift) and a weighted loss.
    #[test]
    fn matches_relu_then_max_pool() {
        let device = autodiff_device();
        for (h, w) in [(28, 28), (14, 14), (7, 9), (1, 3), (5, 1), (6, 70), (3, 33)] {
            let x = Tensor::<4>::random([3, 4, h, w], Distribution::Uniform(-1.0, 1.0), &device)
                .round()
                .div_scalar(2.0);
            let weight = Tensor::<4>::random([3, 4, h / 2, w / 2], Distribution::Default, &device);
            let (xa, xb) = (x.clone().require_grad(), x.require_grad());
            let ya = relu_max_pool2(xa.clone(), |_| unreachable!("flex takes the fused path"));
            let yb = reference(xb.clone());
            assert_eq!(ya.dims(), yb.dims());
            assert_eq!(to_vec(ya.clone().inner()), to_vec(yb.clone().inner()));
            let ga = xa.grad(&(ya * weight.clone()).sum().backward());
            let gb = xb.grad(&(yb * weight).sum().backward());
            match (ga, gb) {
                (Some(a), Some(b)) => assert_eq!(to_vec(a), to_vec(b), "{h}x{w}"),
                (a, b) => assert_eq!(a.is_none(), b.is_none(), "{h}x{w}"),
            }
        }
    }

    #[test]
    fn winner_takes_the_first_maximum() {
        assert_eq!(winner([1.0, 2.0, 2.0, 0.0]), (1, 2.0));
        assert_eq!(winner([3.0, 3.0, 3.0, 3.0]), (0, 3.0));
        assert_eq!(winner([-1.0, -2.0, -0.5, -3.0]), (2, -0.5));
        assert!(winner([0.0, f32::NAN, 1.0, 0.0]).1.is_nan());
    }
}
