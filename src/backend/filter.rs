//! The EFE blocks' fixed 3x3 filters (Gaussian blur, Laplacian, Sobel), per channel with
//! reflect or replicate padding, as one fused burn backend extension op.
//!
//! burn composes them from a pad and a grouped convolution, whose backward passes dominate a
//! Defed training step on the CPU. Here the forward is a direct stencil over each plane and the
//! backward its exact adjoint: the full correlation of the output gradient with the kernel,
//! then the padded border folded back onto the pixels it was copied from. On devices other
//! than `flex` the high-level function keeps burn's composition.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Flex, TensorMetadata, backend_extension};
use burn::tensor::Tensor;
use multiversion::multiversion;
use rayon::prelude::*;

use super::flex::{flex_tensor, on_flex, values};
use super::kernels::uninit;

/// How the border is padded before filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Border {
    /// Mirror without repeating the edge (`[2, 1 | 0, 1, 2]`), PyTorch's `reflect`.
    Reflect,
    /// Repeat the edge pixel, PyTorch's `replicate`.
    Replicate,
}

impl Border {
    /// Source index of padded position `p` (0..n+2) along an axis of length `n`.
    fn source(self, p: usize, n: usize) -> usize {
        match (self, p) {
            (Border::Reflect, 0) => 1.min(n - 1),
            (Border::Replicate, 0) => 0,
            (Border::Reflect, p) if p == n + 1 => n.saturating_sub(2),
            (Border::Replicate, p) if p == n + 1 => n - 1,
            (_, p) => p - 1,
        }
    }

    /// Source index of every padded position along an axis of length `n`.
    fn sources(self, n: usize) -> Vec<usize> {
        (0..n + 2).map(|p| self.source(p, n)).collect()
    }
}

/// Backends with the fused per-channel 3x3 filter and its adjoint.
#[backend_extension(Flex, Autodiff)]
pub trait Filter3x3Backend: Backend {
    /// Filters every channel of `x` (`[n, c, h, w]`) with `kernel` (row-major 3x3) after
    /// padding by one pixel (`replicate`: edge copy, else reflect).
    fn filter3x3(x: FloatTensor<Self>, kernel: [f32; 9], replicate: bool) -> FloatTensor<Self>;
    /// The adjoint of [`filter3x3`](Filter3x3Backend::filter3x3): the input gradient.
    fn filter3x3_backward(
        grad: FloatTensor<Self>,
        kernel: [f32; 9],
        replicate: bool,
    ) -> FloatTensor<Self>;
}

fn border(replicate: bool) -> Border {
    if replicate {
        Border::Replicate
    } else {
        Border::Reflect
    }
}

/// Forward stencil over planes of `h x w`.
pub fn filter_planes(x: &[f32], (h, w): (usize, usize), k: [f32; 9], b: Border) -> Vec<f32> {
    let (rows, cols) = (b.sources(h), b.sources(w));
    // `filter_plane` assigns every element of every plane.
    let mut out = uninit(x.len());
    out.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w))
        .for_each_init(
            || (vec![0f32; (h + 2) * (w + 2) + 2], vec![0f32; h * (w + 2)]),
            |(pad, grid), (dst, src)| filter_plane(src, dst, pad, grid, (h, w), k, (&rows, &cols)),
        );
    out
}

/// One plane: pad by one pixel into `pad` (rows and columns copied from `sources`), then the
/// 3x3 stencil over the padded rows as one flat run into `grid` (rows `w + 2` apart, the last
/// two columns of each junk; one long vector loop instead of short rows with scalar tails),
/// then the rows into `dst`, every element assigned. Same arithmetic order on every ISA (no
/// fused multiply-add), so results do not depend on the CPU.
#[multiversion(targets = "simd")]
fn filter_plane(
    src: &[f32],
    dst: &mut [f32],
    pad: &mut [f32],
    grid: &mut [f32],
    (h, w): (usize, usize),
    k: [f32; 9],
    (rows, cols): (&[usize], &[usize]),
) {
    let wp = w + 2;
    for (pr, &r) in rows.iter().enumerate() {
        let line = &src[r * w..(r + 1) * w];
        let prow = &mut pad[pr * wp..(pr + 1) * wp];
        prow[1..=w].copy_from_slice(line);
        prow[0] = line[cols[0]];
        prow[wp - 1] = line[cols[wp - 1]];
    }
    let n = h * wp;
    let (l0, l1, l2) = (
        &pad[..n + 2],
        &pad[wp..wp + n + 2],
        &pad[2 * wp..2 * wp + n + 2],
    );
    for (p, o) in grid[..n].iter_mut().enumerate() {
        let a = k[0] * l0[p] + k[1] * l0[p + 1] + k[2] * l0[p + 2];
        let b = k[3] * l1[p] + k[4] * l1[p + 1] + k[5] * l1[p + 2];
        let c = k[6] * l2[p] + k[7] * l2[p + 1] + k[8] * l2[p + 2];
        *o = a + b + c;
    }
    for (row, g) in dst.chunks_exact_mut(w).zip(grid.chunks_exact(wp)) {
        row.copy_from_slice(&g[..w]);
    }
}

/// Adjoint of [`filter_planes`]: scatter each output gradient over its 3x3 padded window, then
/// add every padded position into the pixel it was copied from.
pub fn filter_planes_adjoint(
    dy: &[f32],
    (h, w): (usize, usize),
    k: [f32; 9],
    b: Border,
) -> Vec<f32> {
    let (hp, wp) = (h + 2, w + 2);
    let (rows, cols) = (b.sources(h), b.sources(w));
    // `adjoint_plane` assigns every element of every plane.
    let mut out = uninit(dy.len());
    let margin = 2 * wp + 2;
    out.par_chunks_mut(h * w)
        .zip(dy.par_chunks(h * w))
        .for_each_init(
            || (vec![0f32; hp * wp], vec![0f32; h * wp + 2 * margin]),
            |(pad, grid), (dst, src)| adjoint_plane(src, dst, pad, grid, (h, w), k, (&rows, &cols)),
        );
    out
}

/// One plane of [`filter_planes_adjoint`]: the full correlation gathered into `pad`
/// (`(h + 2) x (w + 2)`) as one flat run from `grid`, the output gradient on rows `w + 2` apart
/// between zero margins; then the padded border folded back onto its sources. Each padded
/// position sums its nine terms in the order the scatter form added them (source row
/// ascending, then column), so results equal that form's exactly.
#[multiversion(targets = "simd")]
fn adjoint_plane(
    src: &[f32],
    dst: &mut [f32],
    pad: &mut [f32],
    grid: &mut [f32],
    (h, w): (usize, usize),
    k: [f32; 9],
    (rows, cols): (&[usize], &[usize]),
) {
    let (hp, wp) = (h + 2, w + 2);
    let margin = 2 * wp + 2;
    // Margins and junk columns stay zero: only the data columns are ever written.
    for (y, g) in src.chunks_exact(w).enumerate() {
        grid[margin + y * wp..margin + y * wp + w].copy_from_slice(g);
    }
    // pad[q] = sum over taps (ky, kx) of k[ky][kx] * dy at q - (ky * wp + kx).
    let n = hp * wp;
    let at = |ky: usize, kx: usize| &grid[margin - ky * wp - kx..margin - ky * wp - kx + n];
    let (g20, g21, g22) = (at(2, 0), at(2, 1), at(2, 2));
    let (g10, g11, g12) = (at(1, 0), at(1, 1), at(1, 2));
    let (g00, g01, g02) = (at(0, 0), at(0, 1), at(0, 2));
    for (q, o) in pad[..n].iter_mut().enumerate() {
        let mut acc = 0.0;
        acc += k[6] * g20[q];
        acc += k[7] * g21[q];
        acc += k[8] * g22[q];
        acc += k[3] * g10[q];
        acc += k[4] * g11[q];
        acc += k[5] * g12[q];
        acc += k[0] * g00[q];
        acc += k[1] * g01[q];
        acc += k[2] * g02[q];
        *o = acc;
    }
    // Interior: a straight copy; border rows and columns fold onto their sources.
    for y in 0..h {
        dst[y * w..(y + 1) * w].copy_from_slice(&pad[(y + 1) * wp + 1..(y + 1) * wp + 1 + w]);
    }
    for (pr, &r) in rows.iter().enumerate() {
        for (pc, &c) in cols.iter().enumerate() {
            if pr == 0 || pc == 0 || pr == hp - 1 || pc == wp - 1 {
                dst[r * w + c] += pad[pr * wp + pc];
            }
        }
    }
}

impl Filter3x3Backend for Flex {
    fn filter3x3(x: FloatTensor<Self>, kernel: [f32; 9], replicate: bool) -> FloatTensor<Self> {
        let shape = x.shape().to_vec();
        assert_eq!(x.dtype(), DType::F32, "filter3x3: f32 only");
        let out = filter_planes(&values(&x), (shape[2], shape[3]), kernel, border(replicate));
        flex_tensor(out, shape)
    }

    fn filter3x3_backward(
        grad: FloatTensor<Self>,
        kernel: [f32; 9],
        replicate: bool,
    ) -> FloatTensor<Self> {
        let shape = grad.shape().to_vec();
        let out = filter_planes_adjoint(
            &values(&grad),
            (shape[2], shape[3]),
            kernel,
            border(replicate),
        );
        flex_tensor(out, shape)
    }
}

/// The backward node of the filter (`adjoint: false`) or of its adjoint (`adjoint: true`):
/// both are linear and each is the other's adjoint.
#[derive(Debug)]
struct FilterGrad {
    adjoint: bool,
}

impl FilterGrad {
    fn apply<B: Filter3x3Backend>(
        adjoint: bool,
        x: FloatTensor<B>,
        kernel: [f32; 9],
        replicate: bool,
    ) -> FloatTensor<B> {
        if adjoint {
            B::filter3x3_backward(x, kernel, replicate)
        } else {
            B::filter3x3(x, kernel, replicate)
        }
    }

    /// Runs the filter (or its adjoint) on the inner backend and records this node.
    fn track<B: Backend + Filter3x3Backend, C: CheckpointStrategy>(
        self,
        x: FloatTensor<Autodiff<B, C>>,
        kernel: [f32; 9],
        replicate: bool,
    ) -> FloatTensor<Autodiff<B, C>> {
        let adjoint = self.adjoint;
        match self.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(
                (kernel, replicate),
                Self::apply::<B>(adjoint, x.into_primitive(), kernel, replicate),
            ),
            OpsKind::UnTracked(prep) => prep.finish(Self::apply::<B>(
                adjoint,
                x.into_primitive(),
                kernel,
                replicate,
            )),
        }
    }
}

impl<B: Backend + Filter3x3Backend> Backward<B, 1> for FilterGrad {
    type State = ([f32; 9], bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (kernel, replicate) = ops.state;
        if let Some(node) = node {
            let g = Self::apply::<B>(!self.adjoint, grad, kernel, replicate);
            grads.register::<B>(node.id, g);
        }
    }
}

impl<B: Backend + Filter3x3Backend, C: CheckpointStrategy> Filter3x3Backend for Autodiff<B, C> {
    fn filter3x3(x: FloatTensor<Self>, kernel: [f32; 9], replicate: bool) -> FloatTensor<Self> {
        FilterGrad { adjoint: false }.track::<B, C>(x, kernel, replicate)
    }

    fn filter3x3_backward(
        grad: FloatTensor<Self>,
        kernel: [f32; 9],
        replicate: bool,
    ) -> FloatTensor<Self> {
        FilterGrad { adjoint: true }.track::<B, C>(grad, kernel, replicate)
    }
}

/// Filters each channel of `x` with a 3x3 `kernel` after one pixel of `border` padding, on
/// the fused kernel where the device has it (flex) and through `fallback` elsewhere.
pub fn filter3x3(
    x: Tensor<4>,
    kernel: [f32; 9],
    border: Border,
    fallback: impl FnOnce(Tensor<4>) -> Tensor<4>,
) -> Tensor<4> {
    if !on_flex(&x) || x.dtype() != DType::F32 {
        return fallback(x);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as Filter3x3Backend>::filter3x3(
        x.into_dispatch(),
        kernel,
        border == Border::Replicate,
    ))
}

#[cfg(test)]
mod reference {
    //! The direct form of the filters (pad into a scratch plane, stencil row by row; adjoint by
    //! scattering), the implementation before the flat loops: results must be bit-identical.
    use super::super::kernels::uninit;
    use super::*;
    /// Forward stencil over planes of `h x w`.
    pub fn old_filter_planes(
        x: &[f32],
        (h, w): (usize, usize),
        k: [f32; 9],
        b: Border,
    ) -> Vec<f32> {
        let (rows, cols) = (b.sources(h), b.sources(w));
        // `filter_plane` assigns every element of every plane.
        let mut out = uninit(x.len());
        out.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .for_each_init(
                || vec![0f32; (h + 2) * (w + 2)],
                |pad, (dst, src)| old_filter_plane(src, dst, pad, (h, w), k, (&rows, &cols)),
            );
        out
    }

    /// One plane: pad by one pixel into `pad` (rows and columns copied from `sources`), then the
    /// 3x3 stencil into `dst`, every element assigned. Same arithmetic order on every ISA (no
    /// fused multiply-add), so results do not depend on the CPU.
    fn old_filter_plane(
        src: &[f32],
        dst: &mut [f32],
        pad: &mut [f32],
        (h, w): (usize, usize),
        k: [f32; 9],
        (rows, cols): (&[usize], &[usize]),
    ) {
        let wp = w + 2;
        for (pr, &r) in rows.iter().enumerate() {
            let line = &src[r * w..(r + 1) * w];
            let prow = &mut pad[pr * wp..(pr + 1) * wp];
            prow[1..=w].copy_from_slice(line);
            prow[0] = line[cols[0]];
            prow[wp - 1] = line[cols[wp - 1]];
        }
        for y in 0..h {
            let row = &mut dst[y * w..(y + 1) * w];
            let l0 = &pad[y * wp..y * wp + wp];
            let l1 = &pad[(y + 1) * wp..(y + 1) * wp + wp];
            let l2 = &pad[(y + 2) * wp..(y + 2) * wp + wp];
            for (x, o) in row.iter_mut().enumerate() {
                let a = k[0] * l0[x] + k[1] * l0[x + 1] + k[2] * l0[x + 2];
                let b = k[3] * l1[x] + k[4] * l1[x + 1] + k[5] * l1[x + 2];
                let c = k[6] * l2[x] + k[7] * l2[x + 1] + k[8] * l2[x + 2];
                *o = a + b + c;
            }
        }
    }

    /// Adjoint of [`filter_planes`]: scatter each output gradient over its 3x3 padded window, then
    /// add every padded position into the pixel it was copied from.
    pub fn old_filter_planes_adjoint(
        dy: &[f32],
        (h, w): (usize, usize),
        k: [f32; 9],
        b: Border,
    ) -> Vec<f32> {
        let (hp, wp) = (h + 2, w + 2);
        let (rows, cols) = (b.sources(h), b.sources(w));
        // `adjoint_plane` assigns every element of every plane.
        let mut out = uninit(dy.len());
        out.par_chunks_mut(h * w)
            .zip(dy.par_chunks(h * w))
            .for_each_init(
                || vec![0f32; hp * wp],
                |pad, (dst, src)| old_adjoint_plane(src, dst, pad, (h, w), k, (&rows, &cols)),
            );
        out
    }

    /// One plane of [`old_filter_planes_adjoint`]; `pad` is scratch of `(h + 2) x (w + 2)`.
    fn old_adjoint_plane(
        src: &[f32],
        dst: &mut [f32],
        pad: &mut [f32],
        (h, w): (usize, usize),
        k: [f32; 9],
        (rows, cols): (&[usize], &[usize]),
    ) {
        let (hp, wp) = (h + 2, w + 2);
        pad.iter_mut().for_each(|v| *v = 0.0);
        for y in 0..h {
            let g = &src[y * w..(y + 1) * w];
            for ky in 0..3 {
                let line = &mut pad[(y + ky) * wp..(y + ky + 1) * wp];
                for kx in 0..3 {
                    let kv = k[ky * 3 + kx];
                    for (o, gv) in line[kx..kx + w].iter_mut().zip(g) {
                        *o += kv * gv;
                    }
                }
            }
        }
        // Interior: a straight copy; border rows and columns fold onto their sources.
        for y in 0..h {
            dst[y * w..(y + 1) * w].copy_from_slice(&pad[(y + 1) * wp + 1..(y + 1) * wp + 1 + w]);
        }
        for (pr, &r) in rows.iter().enumerate() {
            for (pc, &c) in cols.iter().enumerate() {
                if pr == 0 || pc == 0 || pr == hp - 1 || pc == wp - 1 {
                    dst[r * w + c] += pad[pr * wp + pc];
                }
            }
        }
    }

    #[test]
    fn flat_loops_equal_the_direct_form() {
        for (h, w) in [(28, 28), (14, 14), (9, 7), (3, 2), (1, 3), (2, 5), (4, 4)] {
            let n = 3 * h * w;
            let x: Vec<f32> = (0..n)
                .map(|i| (i * 7919 % 1000) as f32 / 300.0 - 1.3)
                .collect();
            let k = [0.3, -1.1, 0.7, 2.2, -0.4, 0.9, 1.3, 0.05, -2.0];
            for b in [Border::Reflect, Border::Replicate] {
                let new = filter_planes(&x, (h, w), k, b);
                let old = old_filter_planes(&x, (h, w), k, b);
                assert!(
                    new.iter()
                        .zip(&old)
                        .all(|(a, c)| a.to_bits() == c.to_bits() || (*a == 0.0 && *c == 0.0)),
                    "fwd {h}x{w} {b:?}"
                );
                let new = filter_planes_adjoint(&x, (h, w), k, b);
                let old = old_filter_planes_adjoint(&x, (h, w), k, b);
                for (i, (a, c)) in new.iter().zip(&old).enumerate() {
                    assert!(
                        a.to_bits() == c.to_bits() || (*a == 0.0 && *c == 0.0),
                        "adj {h}x{w} {b:?} at {i}: {a} vs {c}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release --lib filter::speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_timings() {
        let n = 64 * 16 * 28 * 28;
        let inputs: Vec<Vec<f32>> = (0..8)
            .map(|s| (0..n).map(|i| ((i * 7 + s) % 13) as f32).collect())
            .collect();
        let k = [0.1f32; 9];
        let filter = |x: &[f32]| filter_planes(x, (28, 28), k, Border::Reflect);
        let adjoint = |x: &[f32]| filter_planes_adjoint(x, (28, 28), k, Border::Reflect);
        let copy = |x: &[f32]| x.to_vec();
        type Op<'a> = &'a dyn Fn(&[f32]) -> Vec<f32>;
        let fs: [(&str, Op); 3] = [("filter", &filter), ("adjoint", &adjoint), ("copy", &copy)];
        for (name, f) in fs {
            let t = std::time::Instant::now();
            for r in 0..40 {
                std::hint::black_box(f(&inputs[r % 8]));
            }
            println!("{name}: {:.3} ms", t.elapsed().as_secs_f64() * 25.0);
        }
    }
}
