//! Batch normalisation followed by PReLU, fused, as a burn backend extension.
//!
//! Every Defed and BaseNet block ends in `BatchNorm -> PReLU`. burn composes the training-mode
//! batch norm and the PReLU from a dozen whole-tensor passes forward and more backward; here
//! the forward is two passes (statistics, then normalise + affine + PReLU) and the backward
//! two (per-channel sums, then the input gradient), per channel and in parallel over channels.
//! The running statistics are updated exactly as burn's `BatchNorm` does (biased variance,
//! `running = (1 - momentum) * running + momentum * batch`). Inference folds the running
//! statistics into one affine map per channel, one pass forward and one backward under autodiff
//! (attacks through a frozen denoiser). Devices other than `flex` keep burn's own layers.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Flex, TensorMetadata, backend_extension};
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::{BatchNorm, PRelu};
use burn::tensor::Tensor;
use multiversion::multiversion;
use rayon::prelude::*;

use super::conv::{self, FastForm};
use super::flex::{flex_tensor, on_flex, values};
use super::kernels::{self, SendPtr, affine_prelu_values, uninit};

/// Backends with the fused batch-norm + PReLU operations.
#[backend_extension(Flex, Autodiff)]
pub trait NormBackend: Backend {
    /// Per-channel mean and biased variance of `x` (`[n, c, ...]`), as `[2, c]`. Not
    /// differentiated: the statistics feed the running averages and the fused op's state.
    fn channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `prelu(gamma * (x - mean) / sqrt(var + epsilon) + beta, alpha)` with `stats` from
    /// [`channel_stats`](NormBackend::channel_stats).
    fn bn_prelu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
    /// Gradients of [`bn_prelu_train`](NormBackend::bn_prelu_train) with respect to `x`,
    /// `gamma`, `beta` and `alpha`, given the output gradient.
    #[allow(clippy::type_complexity)]
    fn bn_prelu_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );
    /// `prelu(x * scale + shift, alpha)` per channel: batch norm at inference, folded.
    fn affine_prelu(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// Gradients of [`affine_prelu`](NormBackend::affine_prelu) with respect to `x`, `scale`,
    /// `shift` and `alpha`, given the output gradient.
    #[allow(clippy::type_complexity)]
    fn affine_prelu_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );
}

/// `[n, c, rest]` sizes of a tensor shape.
fn ncp(shape: &[usize]) -> (usize, usize, usize) {
    let n = shape[0];
    let c = shape[1];
    (n, c, shape[2..].iter().product())
}

/// Partial sums per reduction: 16 f32 lanes (vectorised on any ISA, the same order on every
/// CPU), combined in f64 per plane.
const LANES: usize = 16;

/// `sum(f(v))` over `s`: 16 f32 partial sums, then f64.
#[inline(always)]
fn lane_sum(s: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut lanes = [0f32; LANES];
    let mut chunks = s.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v) as f64).sum();
    lanes.iter().map(|&l| l as f64).sum::<f64>() + tail
}

/// `sum(v)` over a plane.
#[multiversion(targets = "simd")]
fn plane_sum(s: &[f32]) -> f64 {
    lane_sum(s, |v| v)
}

/// `sum((v - m)^2)` over a plane.
#[multiversion(targets = "simd")]
fn plane_sq_dev(s: &[f32], m: f32) -> f64 {
    lane_sum(s, |v| (v - m) * (v - m))
}

/// Mean and biased variance per channel, two-pass: per plane in f32 lanes, across planes in
/// f64.
pub fn stats(x: &[f32], (n, c, p): (usize, usize, usize)) -> Vec<f32> {
    let per: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(move |i| &x[(i * c + ch) * p..(i * c + ch + 1) * p]);
            let count = (n * p) as f64;
            let mean = planes().map(plane_sum).sum::<f64>() / count;
            let m = mean as f32;
            let var = planes().map(|s| plane_sq_dev(s, m)).sum::<f64>() / count;
            (m, var as f32)
        })
        .collect();
    per.iter()
        .map(|m| m.0)
        .chain(per.iter().map(|m| m.1))
        .collect()
}

/// The train-mode affine map per channel: `k = gamma / sqrt(var + eps)`, `b = beta - mean * k`.
fn train_affine(
    gamma: &[f32],
    beta: &[f32],
    st: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = gamma.len();
    let inv: Vec<f32> = (0..c)
        .map(|i| (1.0 / (st[c + i] as f64 + eps).sqrt()) as f32)
        .collect();
    let k: Vec<f32> = (0..c).map(|i| gamma[i] * inv[i]).collect();
    let b: Vec<f32> = (0..c).map(|i| beta[i] - st[i] * k[i]).collect();
    (k, b, inv)
}

/// For one plane of the train-mode op: the sums of `dz`, `dz * xhat` and `dy * min(z, 0)`,
/// where `z = x * k + b`, `dz = dy * prelu'(z)`, `xhat = (x - mean) * inv_std`.
#[multiversion(targets = "simd")]
fn plane_sums(x: &[f32], dy: &[f32], (k, b, a, mean, inv): (f32, f32, f32, f32, f32)) -> [f64; 3] {
    let term = |xv: f32, g: f32| {
        let z = xv * k + b;
        let (dz, neg) = if z > 0.0 { (g, 0.0) } else { (a * g, z) };
        (dz, dz * (xv - mean) * inv, g * neg)
    };
    let (mut l0, mut l1, mut l2) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let (xs, gs) = (x.chunks_exact(LANES), dy.chunks_exact(LANES));
    let (xr, gr) = (xs.remainder(), gs.remainder());
    for (xc, gc) in xs.zip(gs) {
        for i in 0..LANES {
            let (t0, t1, t2) = term(xc[i], gc[i]);
            l0[i] += t0;
            l1[i] += t1;
            l2[i] += t2;
        }
    }
    let mut out = [l0, l1, l2].map(|l| l.iter().map(|&v| v as f64).sum::<f64>());
    for (&xv, &g) in xr.iter().zip(gr) {
        let (t0, t1, t2) = term(xv, g);
        out[0] += t0 as f64;
        out[1] += t1 as f64;
        out[2] += t2 as f64;
    }
    out
}

/// One plane of the train-mode input gradient.
#[multiversion(targets = "simd")]
#[allow(clippy::type_complexity)]
fn bn_dx_plane(
    dst: &mut [f32],
    x: &[f32],
    dy: &[f32],
    (k, b, a, m, s, coef, count, dbeta, dgamma): (f32, f32, f32, f32, f32, f32, f32, f32, f32),
) {
    for ((o, &xv), &g) in dst.iter_mut().zip(x).zip(dy) {
        let z = xv * k + b;
        let dz = if z > 0.0 { g } else { a * g };
        let xhat = (xv - m) * s;
        *o = coef * (count * dz - dbeta - xhat * dgamma);
    }
}

/// Gradients `(dx, dgamma, dbeta, dalpha)` of the fused train-mode op.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_prelu_backward_values(
    x: &[f32],
    dy: &[f32],
    dims: (usize, usize, usize),
    gamma: &[f32],
    beta: &[f32],
    alpha: &[f32],
    st: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, c, p) = dims;
    let (k, b, inv) = train_affine(gamma, beta, st, eps);
    let mut dx = uninit(x.len());
    let out = SendPtr(dx.as_mut_ptr());
    let count = (n * p) as f64;
    let sums: Vec<(f32, f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (kc, bc, a, m, s) = (k[ch], b[ch], kernels::alpha_at(alpha, ch), st[ch], inv[ch]);
            let (mut sdz, mut sdzx, mut sda) = (0f64, 0f64, 0f64);
            for i in 0..n {
                let r = (i * c + ch) * p..(i * c + ch + 1) * p;
                let sums = plane_sums(&x[r.clone()], &dy[r], (kc, bc, a, m, s));
                sdz += sums[0];
                sdzx += sums[1];
                sda += sums[2];
            }
            let coef = gamma[ch] * s / count as f32;
            let (dbeta, dgamma) = (sdz as f32, sdzx as f32);
            for i in 0..n {
                let r = (i * c + ch) * p..(i * c + ch + 1) * p;
                // SAFETY: channel `ch` owns these planes of dx; no other task writes them.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(r.start), p) };
                let consts = (kc, bc, a, m, s, coef, count as f32, dbeta, dgamma);
                bn_dx_plane(dst, &x[r.clone()], &dy[r], consts);
            }
            (dgamma, dbeta, sda as f32)
        })
        .collect();
    let dgamma = sums.iter().map(|t| t.0).collect();
    let dbeta = sums.iter().map(|t| t.1).collect();
    let dalpha = if alpha.len() == 1 {
        vec![sums.iter().map(|t| t.2).sum()]
    } else {
        sums.iter().map(|t| t.2).collect()
    };
    (dx, dgamma, dbeta, dalpha)
}

/// The fused ops' gradients as flex tensors: the input's (`shape`), two per-channel ones and
/// the slopes' (`na` values).
fn four_grads(
    (dx, d1, d2, da): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>),
    shape: Vec<usize>,
    na: usize,
) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
    let c = shape[1];
    (
        flex_tensor(dx, shape),
        flex_tensor(d1, vec![c]),
        flex_tensor(d2, vec![c]),
        flex_tensor(da, vec![na]),
    )
}

impl NormBackend for Flex {
    fn channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let dims = ncp(&x.shape());
        flex_tensor(stats(&values(&x), dims), vec![2, dims.1])
    }

    fn bn_prelu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let shape = x.shape().to_vec();
        let (k, b, _) = train_affine(&values(&gamma), &values(&beta), &values(&stats), epsilon);
        let y = affine_prelu_values(&values(&x), ncp(&shape), &k, &b, &values(&alpha));
        flex_tensor(y, shape)
    }

    fn bn_prelu_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let shape = x.shape().to_vec();
        let na = alpha.shape()[0];
        let grads = bn_prelu_backward_values(
            &values(&x),
            &values(&grad),
            ncp(&shape),
            &values(&gamma),
            &values(&beta),
            &values(&alpha),
            &values(&stats),
            epsilon,
        );
        four_grads(grads, shape, na)
    }

    fn affine_prelu(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let shape = x.shape().to_vec();
        let y = affine_prelu_values(
            &values(&x),
            ncp(&shape),
            &values(&scale),
            &values(&shift),
            &values(&alpha),
        );
        flex_tensor(y, shape)
    }

    fn affine_prelu_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let shape = x.shape().to_vec();
        let na = alpha.shape()[0];
        let grads = affine_prelu_backward_values(
            &values(&x),
            &values(&grad),
            ncp(&shape),
            &values(&scale),
            &values(&shift),
            &values(&alpha),
        );
        four_grads(grads, shape, na)
    }
}

/// Gradients of `y = prelu(x * k[c] + b[c], alpha)`: `dx` and the per-channel sums for `k`,
/// `b` and `alpha` (one slope or one per channel), summed per plane in f32 lanes and across
/// planes in f64 like the statistics.
fn affine_prelu_backward_values(
    x: &[f32],
    dy: &[f32],
    (n, c, p): (usize, usize, usize),
    k: &[f32],
    b: &[f32],
    alpha: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = uninit(x.len());
    // Per plane: sums of g' * x, g' and dy * min(z, 0), with g' = dy * prelu'(z).
    let mut sums = vec![[0f64; 3]; n * c];
    dx.par_chunks_mut(p.max(1))
        .zip(x.par_chunks(p.max(1)).zip(dy.par_chunks(p.max(1))))
        .zip(sums.par_iter_mut())
        .enumerate()
        .for_each(|(i, ((dst, (xs, gs)), sum))| {
            let ch = i % c;
            *sum = affine_prelu_plane_backward(
                dst,
                xs,
                gs,
                (k[ch], b[ch], kernels::alpha_at(alpha, ch)),
            );
        });
    let mut dk = vec![0f64; c];
    let mut db = vec![0f64; c];
    let mut da = vec![0f64; alpha.len()];
    for (i, s) in sums.iter().enumerate() {
        let ch = i % c;
        dk[ch] += s[0];
        db[ch] += s[1];
        da[if alpha.len() == 1 { 0 } else { ch }] += s[2];
    }
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    (dx, f(dk), f(db), f(da))
}

/// One plane of [`affine_prelu_backward_values`]: writes `dx`, returns the plane's sums of
/// `g' * x`, `g'` and `dy * min(z, 0)` (16 f32 lanes, then f64).
#[multiversion(targets = "simd")]
fn affine_prelu_plane_backward(
    dst: &mut [f32],
    xs: &[f32],
    gs: &[f32],
    (k, b, a): (f32, f32, f32),
) -> [f64; 3] {
    let term = |v: f32, g: f32| {
        let z = v * k + b;
        let (gz, neg) = if z > 0.0 { (g, 0.0) } else { (g * a, z) };
        (gz * k, gz * v, gz, g * neg)
    };
    let (mut l0, mut l1, mut l2) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let mut out = [0f64; 3];
    let whole = xs.len() / LANES * LANES;
    for ((d, xc), gc) in dst[..whole]
        .chunks_exact_mut(LANES)
        .zip(xs[..whole].chunks_exact(LANES))
        .zip(gs[..whole].chunks_exact(LANES))
    {
        for i in 0..LANES {
            let (dx, sk, sb, sa) = term(xc[i], gc[i]);
            d[i] = dx;
            l0[i] += sk;
            l1[i] += sb;
            l2[i] += sa;
        }
    }
    for (o, l) in out.iter_mut().zip([l0, l1, l2]) {
        *o = l.iter().map(|&v| v as f64).sum();
    }
    for ((d, &v), &g) in dst[whole..].iter_mut().zip(&xs[whole..]).zip(&gs[whole..]) {
        let (dx, sk, sb, sa) = term(v, g);
        *d = dx;
        out[0] += sk as f64;
        out[1] += sb as f64;
        out[2] += sa as f64;
    }
    out
}

#[derive(Debug)]
struct NoGrad;

impl<B: Backend> Backward<B, 0> for NoGrad {
    type State = ();
    fn backward(self, _: Ops<(), 0>, _: &mut Gradients, _: &mut Checkpointer) {}
}

#[derive(Debug)]
struct AffinePreluGrad;

impl<B: Backend + NormBackend> Backward<B, 4> for AffinePreluGrad {
    type State = (
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
    );

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, k, b, a) = ops.state;
        let (dx, dk, db, da) = B::affine_prelu_backward(x, k, b, a, grad);
        for (node, g) in ops.parents.into_iter().zip([dx, dk, db, da]) {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct BnPreluGrad;

impl<B: Backend + NormBackend> Backward<B, 4> for BnPreluGrad {
    type State = (
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
        f64,
    );

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, beta, alpha, stats, eps) = ops.state;
        let (dx, dg, db, da) = B::bn_prelu_train_backward(x, gamma, beta, alpha, stats, eps, grad);
        for (node, g) in ops.parents.into_iter().zip([dx, dg, db, da]) {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: Backend + NormBackend, C: CheckpointStrategy> NormBackend for Autodiff<B, C> {
    fn channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let out = B::channel_stats(x.into_primitive());
        NoGrad.prepare::<C>([]).compute_bound().stateless(out)
    }

    fn bn_prelu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let prep = BnPreluGrad
            .prepare::<C>([x.node(), gamma.node(), beta.node(), alpha.node()])
            .compute_bound()
            .stateful();
        let (x, g, b, a, s) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            alpha.into_primitive(),
            stats.into_primitive(),
        );
        let y = B::bn_prelu_train(
            x.clone(),
            g.clone(),
            b.clone(),
            a.clone(),
            s.clone(),
            epsilon,
        );
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, g, b, a, s, epsilon), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn bn_prelu_train_backward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _alpha: FloatTensor<Self>,
        _stats: FloatTensor<Self>,
        _epsilon: f64,
        _grad: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        // Never routed here: the high-level function calls the backward only through the
        // autodiff graph, on the inner backend.
        unreachable!("bn_prelu_train_backward is an inner-backend operation")
    }

    fn affine_prelu(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let prep = AffinePreluGrad
            .prepare::<C>([x.node(), scale.node(), shift.node(), alpha.node()])
            .compute_bound()
            .stateful();
        let (x, k, b, a) = (
            x.into_primitive(),
            scale.into_primitive(),
            shift.into_primitive(),
            alpha.into_primitive(),
        );
        let y = B::affine_prelu(x.clone(), k.clone(), b.clone(), a.clone());
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, k, b, a), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn affine_prelu_backward(
        _x: FloatTensor<Self>,
        _scale: FloatTensor<Self>,
        _shift: FloatTensor<Self>,
        _alpha: FloatTensor<Self>,
        _grad: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        // Never routed here: the autodiff graph calls the backward on the inner backend.
        unreachable!("affine_prelu_backward is an inner-backend operation")
    }
}

type D = burn::backend::Dispatch;

/// `act.forward(bn.forward(x))`, fused on the `flex` CPU backend (training and inference) and
/// burn's own layers elsewhere. Updates the running statistics in training mode, as burn does.
pub fn batch_norm_prelu(bn: &BatchNorm, act: &PRelu, x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    if !on_flex(&x) || x.dtype() != DType::F32 {
        return act.forward(bn.forward(x));
    }
    let channels = x.dims()[1];
    let alpha = act.alpha.val();
    // Parameters on an autodiff device make the whole op an autodiff one, whatever x is.
    let autodiff = device.is_autodiff()
        || bn.gamma.val().device().is_autodiff()
        || alpha.device().is_autodiff();
    if autodiff && bn.training.is_enabled() {
        let stats: Tensor<2> =
            Tensor::from_dispatch(<D as NormBackend>::channel_stats(x.clone().into_dispatch()));
        let mean = stats.clone().narrow(0, 0, 1).reshape([channels]);
        let var = stats.clone().narrow(0, 1, 1).reshape([channels]);
        let m = bn.momentum;
        let rm = bn.running_mean.value_sync().to_device(&device);
        let rv = bn.running_var.value_sync().to_device(&device);
        bn.running_mean
            .update((rm.mul_scalar(1.0 - m) + mean.mul_scalar(m)).detach());
        bn.running_var
            .update((rv.mul_scalar(1.0 - m) + var.mul_scalar(m)).detach());
        Tensor::from_dispatch(<D as NormBackend>::bn_prelu_train(
            x.into_dispatch(),
            bn.gamma.val().into_dispatch(),
            bn.beta.val().into_dispatch(),
            alpha.into_dispatch(),
            stats.into_dispatch(),
            bn.epsilon,
        ))
    } else {
        let (scale, shift) = inference_affine(bn, &device);
        Tensor::from_dispatch(<D as NormBackend>::affine_prelu(
            x.into_dispatch(),
            scale.into_dispatch(),
            shift.into_dispatch(),
            alpha.into_dispatch(),
        ))
    }
}

/// Batch norm at inference as a per-channel affine map `(scale, shift)`:
/// `scale = gamma / sqrt(running_var + eps)`, `shift = beta - running_mean * scale`.
fn inference_affine(bn: &BatchNorm, device: &burn::tensor::Device) -> (Tensor<1>, Tensor<1>) {
    let var = bn.running_var.value().to_device(device);
    let mean = bn.running_mean.value().to_device(device);
    let scale = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
    let shift = bn.beta.val() - mean * scale.clone();
    (scale, shift)
}

/// `act.forward(bn.forward(conv.forward(x)))`: at inference on `flex` (nothing on an autodiff
/// device) with a 3x3 or 5x5 stride-1 layer or a patchify layer (kernel = stride), one kernel
/// pass with batch norm folded into the convolution's weights and bias and PReLU in the
/// kernel's epilogue; else the convolution through [`conv::conv2d`] then [`batch_norm_prelu`].
pub fn conv_bn_prelu(conv: &Conv2d, bn: &BatchNorm, act: &PRelu, x: Tensor<4>) -> Tensor<4> {
    let form = conv::conv_form(conv, &x).or_else(|| conv::patch_form(conv, &x));
    fused_inference(form, bn, act, &x)
        .unwrap_or_else(|| batch_norm_prelu(bn, act, conv::conv2d(conv, x)))
}

/// [`conv_bn_prelu`] for a transposed convolution.
pub(crate) fn conv_transpose_bn_prelu(
    conv: &ConvTranspose2d,
    bn: &BatchNorm,
    act: &PRelu,
    x: Tensor<4>,
) -> Tensor<4> {
    let form = conv::conv_transpose_form(conv, &x).or_else(|| conv::patch_transpose_form(conv, &x));
    fused_inference(form, bn, act, &x)
        .unwrap_or_else(|| batch_norm_prelu(bn, act, conv::conv_transpose2d(conv, x)))
}

/// The fused inference path, or `None` when it does not apply.
fn fused_inference(
    form: Option<FastForm>,
    bn: &BatchNorm,
    act: &PRelu,
    x: &Tensor<4>,
) -> Option<Tensor<4>> {
    let form = form?;
    let alpha = act.alpha.val();
    let device = x.device();
    let plain = on_flex(x)
        && [
            x.dtype(),
            form.weight.dtype(),
            form.bias.dtype(),
            alpha.dtype(),
        ]
        .iter()
        .all(|&d| d == DType::F32)
        && !device.is_autodiff()
        && !form.weight.device().is_autodiff()
        && !bn.gamma.val().device().is_autodiff()
        && !alpha.device().is_autodiff();
    if !plain {
        return None;
    }
    let (scale, shift) = inference_affine(bn, &device);
    let cout = scale.dims()[0];
    let alpha = if alpha.dims()[0] == 1 {
        alpha.expand([cout])
    } else {
        alpha
    };
    let folded = FastForm {
        weight: form.weight * scale.clone().reshape([cout, 1, 1, 1]),
        bias: form.bias * scale + shift,
        padding: form.padding,
        shuffle: form.shuffle,
    };
    Some(conv::fast_conv_prelu(x.clone(), folded, alpha))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::nn::{BatchNormConfig, PReluConfig};
    use burn::tensor::Distribution;

    fn rel_diff<const K: usize>(a: Tensor<K>, b: Tensor<K>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// The fused path equals burn's BatchNorm + PReLU: outputs, all four gradients, running
    /// statistics, and the inference output afterwards, to 1e-5.
    #[test]
    fn fused_equals_burn_layers() {
        let device = crate::backend::autodiff_device();
        for alphas in [1, 6] {
            let bn = BatchNormConfig::new(6).init(&device);
            let act = PReluConfig::new()
                .with_num_parameters(alphas)
                .with_alpha(0.2)
                .init(&device);
            let reference_bn = bn.clone();
            let x = Tensor::<4>::random([4, 6, 5, 7], Distribution::Normal(0.3, 2.0), &device)
                .require_grad();
            assert!(on_flex(&x));
            let probe = Tensor::<4>::random([4, 6, 5, 7], Distribution::Default, &device);
            let fast = batch_norm_prelu(&bn, &act, x.clone());
            let slow = act.forward(reference_bn.forward(x.clone()));
            assert!(rel_diff(fast.clone(), slow.clone()) < 1e-5);
            let gf = (fast * probe.clone()).sum().backward();
            let gs = (slow * probe).sum().backward();
            assert!(rel_diff(x.grad(&gf).unwrap(), x.grad(&gs).unwrap()) < 1e-5);
            for (p, name) in [
                (&bn.gamma, "gamma"),
                (&bn.beta, "beta"),
                (&act.alpha, "alpha"),
            ] {
                let d = rel_diff(p.grad(&gf).unwrap(), p.grad(&gs).unwrap());
                assert!(d < 1e-5, "{name}: {d}");
            }
            let d = rel_diff(bn.running_mean.value(), reference_bn.running_mean.value());
            assert!(d < 1e-6, "running mean {d}");
            let d = rel_diff(bn.running_var.value(), reference_bn.running_var.value());
            assert!(d < 1e-6, "running var {d}");

            let plain = crate::backend::default_device();
            let (bn, act) = (bn.valid(), act.valid());
            let x = Tensor::<4>::random([2, 6, 3, 3], Distribution::Default, &plain);
            let d = rel_diff(
                batch_norm_prelu(&bn, &act, x.clone()),
                act.forward(bn.forward(x)),
            );
            assert!(d < 1e-5, "inference {d}");
        }
    }

    /// Inference mode under autodiff (attacks through a frozen denoiser, fine-tuning with
    /// frozen statistics): the folded affine map + PReLU equals burn's layers, output and the
    /// gradients of the input, gamma, beta and the slopes, to 1e-5; frozen parameters take none.
    #[test]
    fn inference_under_autodiff_equals_burn_layers() {
        use burn::module::Param;
        let device = crate::backend::autodiff_device();
        for alphas in [1, 4] {
            let mut bn = BatchNormConfig::new(4).init(&device);
            for i in 0..3 {
                let x =
                    Tensor::<4>::random([8, 4, 3, 5], Distribution::Normal(i as f64, 2.0), &device);
                let _ = bn.forward(x);
            }
            bn.training = Param::from_bool(false);
            let act = PReluConfig::new()
                .with_num_parameters(alphas)
                .with_alpha(0.25)
                .init(&device);
            let x = Tensor::<4>::random([3, 4, 6, 5], Distribution::Normal(0.0, 3.0), &device)
                .require_grad();
            let probe = Tensor::<4>::random([3, 4, 6, 5], Distribution::Default, &device);
            let fast = batch_norm_prelu(&bn, &act, x.clone());
            let slow = act.forward(bn.forward(x.clone()));
            assert!(rel_diff(fast.clone(), slow.clone()) < 1e-5);
            let gf = (fast * probe.clone()).sum().backward();
            let gs = (slow * probe.clone()).sum().backward();
            assert!(rel_diff(x.grad(&gf).unwrap(), x.grad(&gs).unwrap()) < 1e-5);
            for (p, name) in [
                (&bn.gamma, "gamma"),
                (&bn.beta, "beta"),
                (&act.alpha, "alpha"),
            ] {
                let d = rel_diff(p.grad(&gf).unwrap(), p.grad(&gs).unwrap());
                assert!(d < 1e-5, "{name}, {alphas} slopes: {d}");
            }
            let (bn, act) = (bn.freeze(), act.freeze());
            let fast = batch_norm_prelu(&bn, &act, x.clone());
            let slow = act.forward(bn.forward(x.clone()));
            let gf = (fast * probe.clone()).sum().backward();
            let gs = (slow * probe).sum().backward();
            assert!(rel_diff(x.grad(&gf).unwrap(), x.grad(&gs).unwrap()) < 1e-5);
            assert!(bn.gamma.grad(&gf).is_none() && act.alpha.grad(&gf).is_none());
        }
    }

    /// At inference, conv + batch norm + PReLU as one kernel (batch norm folded into the
    /// weights, PReLU in the epilogue) equals burn's three layers to 1e-5, for forward and
    /// transposed 3x3 layers, forward and transposed patchify layers (2x2 and 3x3, stride =
    /// kernel) and shared or per-channel slopes; other layers fall back; NaN inputs stay NaN.
    #[test]
    fn conv_fused_at_inference_equals_layers() {
        use burn::nn::PaddingConfig2d;
        use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
        let train = crate::backend::autodiff_device();
        let plain = crate::backend::default_device();
        for alphas in [1, 5] {
            let bn = BatchNormConfig::new(5).init(&train);
            // Non-trivial running statistics: a few training passes.
            for i in 0..3 {
                let x =
                    Tensor::<4>::random([8, 5, 4, 4], Distribution::Normal(i as f64, 3.0), &train);
                let _ = bn.forward(x);
            }
            let act = PReluConfig::new()
                .with_num_parameters(alphas)
                .with_alpha(0.15)
                .init(&plain);
            let bn = bn.valid();
            let conv = Conv2dConfig::new([3, 5], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&plain);
            let convt = ConvTranspose2dConfig::new([3, 5], [3, 3])
                .with_padding([1, 1])
                .init(&plain);
            let x = Tensor::<4>::random([3, 3, 9, 11], Distribution::Normal(0.0, 2.0), &plain);
            assert!(fused_inference(conv::conv_form(&conv, &x), &bn, &act, &x).is_some());
            let d = rel_diff(
                conv_bn_prelu(&conv, &bn, &act, x.clone()),
                act.forward(bn.forward(conv.forward(x.clone()))),
            );
            assert!(d < 1e-5, "conv, {alphas} slopes: {d}");
            let form = conv::conv_transpose_form(&convt, &x);
            assert!(fused_inference(form, &bn, &act, &x).is_some());
            let d = rel_diff(
                conv_transpose_bn_prelu(&convt, &bn, &act, x.clone()),
                act.forward(bn.forward(convt.forward(x.clone()))),
            );
            assert!(d < 1e-5, "transposed, {alphas} slopes: {d}");

            // Patchify layers (kernel = stride): 1x1 kernels around space-to-depth or
            // depth-to-space.
            for k in [2, 3] {
                let down = Conv2dConfig::new([3, 5], [k, k])
                    .with_stride([k, k])
                    .init(&plain);
                let x = Tensor::<4>::random([2, 3, 4 * k, 2 * k], Distribution::Default, &plain);
                assert!(conv::conv_form(&down, &x).is_none());
                let form = conv::patch_form(&down, &x);
                assert!(fused_inference(form, &bn, &act, &x).is_some());
                let d = rel_diff(
                    conv_bn_prelu(&down, &bn, &act, x.clone()),
                    act.forward(bn.forward(down.forward(x))),
                );
                assert!(d < 1e-5, "{k}x{k} stride {k}, {alphas} slopes: {d}");
                let up = ConvTranspose2dConfig::new([3, 5], [k, k])
                    .with_stride([k, k])
                    .init(&plain);
                let x = Tensor::<4>::random([2, 3, 3, 5], Distribution::Default, &plain);
                let form = conv::patch_transpose_form(&up, &x);
                assert!(fused_inference(form, &bn, &act, &x).is_some());
                let d = rel_diff(
                    conv_transpose_bn_prelu(&up, &bn, &act, x.clone()),
                    act.forward(bn.forward(up.forward(x))),
                );
                assert!(
                    d < 1e-5,
                    "transposed {k}x{k} stride {k}, {alphas} slopes: {d}"
                );
            }
            // Not whole patches, or a stride below the kernel: burn's layers.
            let down = Conv2dConfig::new([3, 5], [2, 2])
                .with_stride([2, 2])
                .init(&plain);
            let strided = Conv2dConfig::new([3, 5], [3, 3])
                .with_stride([2, 2])
                .init(&plain);
            let x = Tensor::<4>::random([2, 3, 9, 8], Distribution::Default, &plain);
            for c in [&down, &strided] {
                assert!(conv::patch_form(c, &x).is_none() && conv::conv_form(c, &x).is_none());
                let d = rel_diff(
                    conv_bn_prelu(c, &bn, &act, x.clone()),
                    act.forward(bn.forward(c.forward(x.clone()))),
                );
                assert!(d < 1e-5, "fallback: {d}");
            }
            let up = ConvTranspose2dConfig::new([3, 5], [3, 3])
                .with_stride([2, 2])
                .init(&plain);
            assert!(conv::patch_transpose_form(&up, &x).is_none());
            let d = rel_diff(
                conv_transpose_bn_prelu(&up, &bn, &act, x.clone()),
                act.forward(bn.forward(up.forward(x))),
            );
            assert!(d < 1e-5, "transposed fallback: {d}");
        }
        let conv = Conv2dConfig::new([1, 2], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&plain);
        let bn = BatchNormConfig::new(2).init(&plain);
        let act = PReluConfig::new().init(&plain);
        let mut v = vec![0.5f32; 25];
        v[12] = f32::NAN;
        let x = Tensor::<4>::from_data(burn::tensor::TensorData::new(v, [1, 1, 5, 5]), &plain);
        let y: Vec<f32> = conv_bn_prelu(&conv, &bn, &act, x)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!(y[12].is_nan() && y[25 + 12].is_nan() && !y[0].is_nan());
    }
}
