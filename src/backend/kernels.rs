//! SIMD kernels for the square (3x3, 5x5), stride-1 convolutions that dominate Defed's and
//! LeNet's cost.
//!
//! Layout: every image channel is copied once into a zero-padded plane whose rows are
//! `wp = w + pad_w` apart: each row is followed by `pad_w` zeros, which serve as the right
//! padding of that row and the left padding of the next one. An output pixel `(y, x)` is
//! computed at the flat position `p = y * wp + x`, and then every input tap `(ky, kx)` is the
//! contiguous run starting at `p + ky * wp + kx`. So the inner loops are plain unaligned vector
//! loads with no border tests; the price is computing `wp - wo` junk columns per row (`pad_w`
//! for a same-size convolution: 3.4% at 28x28 with 3x3, 12.5% at 14x14 with 5x5), which the
//! masked stores of the epilogue leave out.
//! Vectorising over pixels rather than channels makes one kernel serve every channel count
//! (1, 16, 32 ...), and NCHW in and out means no layout transposes.
//!
//! On AVX2 and the portable path, the "same" 3x3 and 5x5 convolutions with 4 or more input and
//! 8 or more output channels (all of Defed's 16- and 32-channel layers, the Madry network's
//! second) go to the Winograd kernels of [`winograd`] instead: fewer multiplications for the
//! same sums up to rounding, with the register tiles of [`forward_block`].
//!
//! The same forward kernel computes the input gradient (a full convolution of the output
//! gradient with the flipped, transposed weights); the weight gradient is its own kernel (a
//! register block of 3 output channels x 9 taps on AVX-512, 2 elsewhere, summed over
//! pixels), Winograd too for the 3x3 layers with 8 or more input channels that the Winograd
//! forward kernel serves. Each kernel is generic over a small [`Simd`] trait and compiled for
//! AVX-512 and AVX2+FMA, picked at run time ([`Isa`]), with a portable fallback.

use rayon::prelude::*;

mod winograd;

/// Output pixels computed per register block: the block width in vectors times the lanes of
/// the widest ISA (16). Planes are rounded up to a multiple of this so no block needs a tail.
const PIX_ALIGN: usize = 16;

/// The shape of one k x k stride-1 convolution and its padded-plane geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Zero padding above and below.
    pub pad_h: usize,
    /// Zero padding left and right.
    pub pad_w: usize,
    /// Kernel size (square).
    pub k: usize,
}

impl Geometry {
    /// Distance between padded rows: the row and `pad_w` zeros shared with the next row's left
    /// padding.
    pub fn wp(&self) -> usize {
        self.w + self.pad_w
    }
    /// Output height.
    pub fn ho(&self) -> usize {
        self.h + 2 * self.pad_h + 1 - self.k
    }
    /// Output width.
    pub fn wo(&self) -> usize {
        self.w + 2 * self.pad_w + 1 - self.k
    }
    /// Flat output positions computed per channel (junk columns included), rounded up.
    pub fn grid(&self) -> usize {
        (self.ho() * self.wp()).div_ceil(PIX_ALIGN) * PIX_ALIGN
    }
    /// Length of one padded input plane: every tap of every computed position stays inside.
    pub fn plane(&self) -> usize {
        // + 128: a register tile may read up to 8 vectors of 16 past the last position.
        let need = self.grid() + (self.k - 1) * (self.wp() + 1) + 128;
        need.max((self.h + 2 * self.pad_h) * self.wp() + self.pad_w)
            .div_ceil(16)
            * 16
    }
    /// The geometry of the input-gradient convolution: output gradient in, input gradient out.
    pub fn transposed(&self) -> Geometry {
        Geometry {
            batch: self.batch,
            cin: self.cout,
            cout: self.cin,
            h: self.ho(),
            w: self.wo(),
            pad_h: self.k - 1 - self.pad_h,
            pad_w: self.k - 1 - self.pad_w,
            k: self.k,
        }
    }
    /// Whether the kernels support this shape: k of 1, 3 or 5, padding below k, output at
    /// least 1x1.
    pub fn supported(&self) -> bool {
        (self.k == 1 || self.k == 3 || self.k == 5)
            && self.pad_h < self.k
            && self.pad_w < self.k
            && self.h + 2 * self.pad_h >= self.k
            && self.w + 2 * self.pad_w >= self.k
            && self.batch > 0
            && self.cin > 0
            && self.cout > 0
    }
}

/// A raw pointer that rayon tasks may share; every task writes a disjoint range.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer; a method so that closures capture the whole (Send) wrapper.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// A vector of `len` floats for a caller that assigns every element before reading any.
pub(crate) fn uninit(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: f32 has no invalid bit patterns; every caller writes all `len` elements before
    // any read (each call site says how).
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// The instruction sets the kernels are compiled for; [`Isa::best`] is what the CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Plain Rust arrays (any CPU).
    Portable,
    /// AVX2 with FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The widest instruction set this CPU has (detected once; every kernel call asks).
    pub(crate) fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            *Isa::available()
                .last()
                .expect("portable is always available")
        })
    }

    /// Every instruction set this CPU can run, narrowest first.
    pub(crate) fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    /// The forward kernel's register tiles, widest first, as output channels per tile: a
    /// layer's channels go to the widest tile that fits what is left. A tile (channels x
    /// pixel vectors of accumulators, plus the pixel vectors and a weight) must fit the
    /// register file: 32 vector registers with AVX-512 (and on the 64-bit ARM targets the
    /// portable path serves), 16 with AVX2, where 8 channels x 3 vectors spilled accumulators
    /// to the stack on every multiply-add (the tiles are listed in [`forward_block`]).
    pub(crate) fn channel_blocks(self) -> &'static [usize] {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => &[6, 4, 2, 1],
            _ => &[8, 1],
        }
    }
}

/// Copies NCHW planes of `h x w` (`x`) into zero-padded planes of length `plane` in `dst`
/// (every element written), rows `row` long, each image starting at row `top`, column `left`.
/// Called for one image or a few at a time, so the padded copy stays in cache for the kernel.
fn pad_planes(
    dst: &mut [f32],
    x: &[f32],
    (h, w): (usize, usize),
    (top, left): (usize, usize),
    row: usize,
    plane: usize,
) {
    for (d, src) in dst.chunks_mut(plane).zip(x.chunks((h * w).max(1))) {
        pad_plane(d, src, (h, w), (top, left), row);
    }
}

/// One plane of [`pad_planes`]: writes every element of `dst` (border zeros, copied rows,
/// tail zeros).
fn pad_plane(
    dst: &mut [f32],
    src: &[f32],
    (h, w): (usize, usize),
    (top, left): (usize, usize),
    row: usize,
) {
    if h == 0 {
        dst.fill(0.0);
        return;
    }
    dst[..top * row + left].fill(0.0);
    for y in 0..h {
        let d = (y + top) * row + left;
        dst[d..d + w].copy_from_slice(&src[y * w..(y + 1) * w]);
        let next = if y + 1 < h { d + row } else { dst.len() };
        dst[d + w..next].fill(0.0);
    }
}

/// Space-to-depth: NCHW `[n, c, h, w]` (`h`, `w` multiples of `k`) to
/// `[n, c * k * k, h / k, w / k]`, channel `ci * k * k + a * k + b` holding
/// `x[.., ci, k * i + a, k * j + b]`: the order of a `[cout, cin, k, k]` weight's taps, so a
/// k x k stride-k convolution of `x` is a 1x1 convolution of the result.
pub fn space_to_depth(x: &[f32], [n, c, h, w]: [usize; 4], k: usize) -> Vec<f32> {
    assert!(
        k > 0 && h % k == 0 && w % k == 0,
        "space_to_depth: whole patches"
    );
    assert_eq!(x.len(), n * c * h * w, "space_to_depth: input size");
    let (ho, wo) = (h / k, w / k);
    // Every input plane fills its k * k output planes completely.
    let mut out = uninit(x.len());
    out.par_chunks_mut((k * k * ho * wo).max(1))
        .zip(x.par_chunks((h * w).max(1)))
        .for_each(|(dst, src)| {
            for (y, row) in src.chunks_exact(w.max(1)).enumerate() {
                // Input row k i + a feeds row i of output planes a k .. a k + k.
                let (i, a) = (y / k, y % k);
                let at = |b: usize| ((a * k + b) * ho + i) * wo;
                if k == 2 {
                    // Both phases in one pass, so the loads deinterleave in vector registers.
                    let (p0, p1) = (at(0), at(1));
                    let (d0, rest) = dst[p0..].split_at_mut(p1 - p0);
                    for ((e, o), pair) in d0[..wo]
                        .iter_mut()
                        .zip(&mut rest[..wo])
                        .zip(row.chunks_exact(2))
                    {
                        *e = pair[0];
                        *o = pair[1];
                    }
                } else {
                    for b in 0..k {
                        let d = &mut dst[at(b)..at(b) + wo];
                        for (v, s) in d.iter_mut().zip(row[b..].iter().step_by(k)) {
                            *v = *s;
                        }
                    }
                }
            }
        });
    out
}

/// Depth-to-space, the inverse of [`space_to_depth`]: `[n, c * k * k, h, w]` to
/// `[n, c, h * k, w * k]`.
pub fn depth_to_space(z: &[f32], [n, ckk, h, w]: [usize; 4], k: usize) -> Vec<f32> {
    assert!(k > 0 && ckk % (k * k) == 0, "depth_to_space: whole patches");
    assert_eq!(z.len(), n * ckk * h * w, "depth_to_space: input size");
    let wk = w * k;
    // Every output plane is filled completely from its k * k input planes.
    let mut out = uninit(z.len());
    out.par_chunks_mut((k * k * h * w).max(1))
        .zip(z.par_chunks((k * k * h * w).max(1)))
        .for_each(|(dst, src)| {
            for (y, row) in dst.chunks_exact_mut(wk.max(1)).enumerate() {
                // Output row k i + a comes from row i of input planes a k .. a k + k.
                let (i, a) = (y / k, y % k);
                let at = |b: usize| ((a * k + b) * h + i) * w;
                if k == 2 {
                    let (s0, s1) = (&src[at(0)..at(0) + w], &src[at(1)..at(1) + w]);
                    for ((pair, e), o) in row.chunks_exact_mut(2).zip(s0).zip(s1) {
                        pair[0] = *e;
                        pair[1] = *o;
                    }
                } else {
                    for b in 0..k {
                        let s = &src[at(b)..at(b) + w];
                        for (v, d) in s.iter().zip(row[b..].iter_mut().step_by(k)) {
                            *d = *v;
                        }
                    }
                }
            }
        });
    out
}

/// Forward convolution: `x` NCHW `[batch, cin, h, w]`, `weight` `[cout, cin, k, k]`, optional
/// `bias` `[cout]`; returns NCHW `[batch, cout, ho, wo]`.
pub fn conv(g: &Geometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    conv_prelu(g, x, weight, bias, None)
}

/// [`conv`] followed by PReLU with per-output-channel slopes `prelu` (`[cout]`) when given,
/// applied in the kernel's epilogue (no extra pass over the output).
pub fn conv_prelu(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    prelu: Option<&[f32]>,
) -> Vec<f32> {
    conv_prelu_on(Isa::best(), g, x, weight, bias, prelu)
}

/// [`conv_prelu`] on the given instruction set.
pub(crate) fn conv_prelu_on(
    isa: Isa,
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    prelu: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(x.len(), g.batch * g.cin * g.h * g.w, "conv: input size");
    if let Some(a) = prelu {
        assert_eq!(a.len(), g.cout, "conv: one PReLU slope per output channel");
    }
    assert_eq!(
        weight.len(),
        g.cout * g.cin * g.k * g.k,
        "conv: weight size"
    );
    forward_grid(
        isa,
        g,
        x,
        Params {
            weight,
            bias,
            prelu,
        },
    )
}

/// Gradient of [`conv`] with respect to its input, from the output gradient `dy`
/// (NCHW `[batch, cout, ho, wo]`).
pub fn conv_input_grad(g: &Geometry, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    let t = g.transposed();
    let kk = g.k * g.k;
    // wt[ci][co][ky][kx] = w[co][ci][k - 1 - ky][k - 1 - kx]
    let mut wt = vec![0f32; weight.len()];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            for tap in 0..kk {
                wt[(ci * g.cout + co) * kk + (kk - 1 - tap)] = weight[(co * g.cin + ci) * kk + tap];
            }
        }
    }
    conv(&t, dy, &wt, None)
}

/// Images the weight-gradient kernel sums in registers before adding into its accumulator
/// (their padded planes are a few hundred kilobytes: they stay in the core's cache).
const WEIGHT_IMAGES: usize = 4;

/// Gradient of [`conv`] with respect to its weight, `[cout, cin, k, k]`.
pub fn conv_weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    conv_weight_grad_on(Isa::best(), g, x, dy)
}

/// [`conv_weight_grad`] on the given instruction set.
pub(crate) fn conv_weight_grad_on(isa: Isa, g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        g.batch * g.cin * g.h * g.w,
        "weight grad: input size"
    );
    assert_eq!(
        dy.len(),
        g.batch * g.cout * g.ho() * g.wo(),
        "weight grad: output gradient size"
    );
    if winograd::weight_applies(isa, g) {
        winograd::weight_grad(isa, g, x, dy)
    } else {
        weight_direct(isa, g, x, dy)
    }
}

/// A weight gradient's sum over a batch of `batch` images: the images in chunks (about two per
/// thread), `sum(first, end, acc)` adding chunk `first..end` into its own zeroed accumulator of
/// `len` floats, and the accumulators added in chunk order.
fn sum_over_chunks(
    batch: usize,
    len: usize,
    sum: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let chunk = batch.div_ceil(rayon::current_num_threads() * 2).max(1);
    let partials: Vec<Vec<f32>> = (0..batch)
        .step_by(chunk)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|b0| {
            let mut acc = vec![0f32; len];
            sum(b0, (b0 + chunk).min(batch), &mut acc);
            acc
        })
        .collect();
    let mut out = vec![0f32; len];
    for p in &partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

/// Direct weight-gradient kernel: sums `x * dy` over the padded grid, per weight.
fn weight_direct(isa: Isa, g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (wp, plane, grid) = (g.wp(), g.plane(), g.grid());
    let (xn, dn) = (g.cin * g.h * g.w, g.cout * g.ho() * g.wo());
    sum_over_chunks(g.batch, g.cout * g.cin * g.k * g.k, |b0, b1, acc| {
        // A few images at a time are padded into buffers that stay in cache: the input as in
        // the forward pass, the output gradient on the same grid, zero in the junk columns so
        // they add nothing.
        let mut xp = uninit(WEIGHT_IMAGES * g.cin * plane);
        let mut dyg = uninit(WEIGHT_IMAGES * g.cout * grid);
        let mut b = b0;
        while b < b1 {
            let n = (b1 - b).min(WEIGHT_IMAGES);
            let xs = &mut xp[..n * g.cin * plane];
            let hw = (g.h, g.w);
            pad_planes(
                xs,
                &x[b * xn..(b + n) * xn],
                hw,
                (g.pad_h, g.pad_w),
                wp,
                plane,
            );
            let ds = &mut dyg[..n * g.cout * grid];
            let grad = (g.ho(), g.wo());
            pad_planes(ds, &dy[b * dn..(b + n) * dn], grad, (0, 0), wp, grid);
            dispatch_weight(isa, g, n, xs, ds, acc);
            b += n;
        }
    })
}

/// Gradient of [`conv`] with respect to its bias: the output gradient summed per channel.
pub fn bias_grad(batch: usize, cout: usize, dy: &[f32]) -> Vec<f32> {
    let per = (dy.len() / (batch * cout).max(1)).max(1);
    // Eight independent partial sums per plane, so the loop vectorises.
    let plane_sums: Vec<f32> = dy
        .par_chunks(per)
        .map(|plane| {
            let mut lanes = [0f32; 8];
            let mut chunks = plane.chunks_exact(8);
            for c in &mut chunks {
                for (l, v) in lanes.iter_mut().zip(c) {
                    *l += v;
                }
            }
            lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
        })
        .collect();
    let mut out = vec![0f32; cout];
    for (i, v) in plane_sums.iter().enumerate() {
        out[i % cout] += v;
    }
    out
}

/// What the forward kernel multiplies by and applies: `[cout, cin, k, k]` weights, an optional
/// `[cout]` bias and optional `[cout]` PReLU slopes.
#[derive(Clone, Copy)]
struct Params<'a> {
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
    prelu: Option<&'a [f32]>,
}

/// A layer's output channels as register-tile blocks `(first, count)`: each takes the widest
/// of [`Isa::channel_blocks`] that fits what is left.
fn channel_blocks(isa: Isa, cout: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut c = 0;
    while c < cout {
        let n = *isa
            .channel_blocks()
            .iter()
            .find(|&&n| n <= cout - c)
            .expect("1 fits");
        v.push((c, n));
        c += n;
    }
    v
}

/// Forward convolution of `x` (NCHW `[batch, cin, h, w]`) into NCHW `[batch, cout, ho, wo]`:
/// Winograd where it applies, the direct kernel elsewhere.
fn forward_grid(isa: Isa, g: &Geometry, x: &[f32], params: Params) -> Vec<f32> {
    if winograd::applies(isa, g) {
        winograd::forward(isa, g, x, params)
    } else {
        direct(isa, g, x, params)
    }
}

/// Direct forward kernel: pads `x` and writes the output directly (junk columns are never
/// stored).
fn direct(isa: Isa, g: &Geometry, x: &[f32], params: Params) -> Vec<f32> {
    let (grid, plane) = (g.grid(), g.plane());
    let out_plane = g.ho() * g.wo();
    // Every (image, channel, y, x < wo) is written exactly once below.
    let mut out = uninit(g.batch * g.cout * out_plane);
    let blocks = channel_blocks(isa, g.cout);
    // Weights re-laid per block as [ci][tap][c], so one tap's channels are adjacent; block
    // `c0..c0 + n` starts at `c0 * cin * k * k`.
    let kk = g.k * g.k;
    let mut packed = vec![0f32; params.weight.len()];
    for &(c0, n) in &blocks {
        let dst = &mut packed[c0 * g.cin * kk..(c0 + n) * g.cin * kk];
        for c in 0..n {
            for ci in 0..g.cin {
                for t in 0..kk {
                    dst[(ci * kk + t) * n + c] = params.weight[((c0 + c) * g.cin + ci) * kk + t];
                }
            }
        }
    }
    let params = Params {
        weight: &packed,
        ..params
    };
    let threads = rayon::current_num_threads();
    if g.batch >= threads * 4 {
        // Image by image: each task pads one image into a buffer that stays in cache while
        // every channel block reads it, rather than writing a padded batch out to memory and
        // reading it back (a fifth of the Defed training step went to that round trip).
        out.par_chunks_mut((g.cout * out_plane).max(1))
            .zip(x.par_chunks((g.cin * g.h * g.w).max(1)))
            .for_each_init(
                // One padded image per task, reused from image to image.
                || uninit(g.cin * plane),
                |xp, (o, xi)| {
                    let pad = (g.pad_h, g.pad_w);
                    pad_planes(xp, xi, (g.h, g.w), pad, g.wp(), plane);
                    for &(c0, n) in &blocks {
                        // SAFETY: channels c0..c0 + n of this image's output, all positions.
                        unsafe {
                            let dst = o.as_mut_ptr().add(c0 * out_plane);
                            dispatch_forward(isa, g, xp, params, c0, n, 0, grid, dst);
                        }
                    }
                },
            );
        return out;
    }
    // Few images: pad them all (an image per task), then split each image's positions across
    // the threads too.
    let mut xp = uninit(g.batch * g.cin * plane);
    xp.par_chunks_mut((g.cin * plane).max(1))
        .zip(x.par_chunks((g.cin * g.h * g.w).max(1)))
        .for_each(|(d, xi)| pad_planes(d, xi, (g.h, g.w), (g.pad_h, g.pad_w), g.wp(), plane));
    let optr = SendPtr(out.as_mut_ptr());
    let work = g.batch * blocks.len();
    let splits = (threads * 4).div_ceil(work).max(1);
    let span = (grid / PIX_ALIGN).div_ceil(splits) * PIX_ALIGN;
    let tasks: Vec<(usize, usize, usize, usize)> = (0..g.batch)
        .flat_map(|b| blocks.iter().map(move |&(c, n)| (b, c, n)))
        .flat_map(|(b, c, n)| (0..grid).step_by(span).map(move |p| (b, c, n, p)))
        .collect();
    tasks.into_par_iter().for_each(|(b, c0, n, p0)| {
        let p1 = (p0 + span).min(grid);
        let xs = &xp[b * g.cin * plane..(b + 1) * g.cin * plane];
        // SAFETY: each task writes channels c0..c0+n of image b, positions p0..p1 only.
        unsafe {
            let o = optr.get().add((b * g.cout + c0) * out_plane);
            dispatch_forward(isa, g, xs, params, c0, n, p0, p1, o);
        }
    });
    out
}

#[allow(clippy::too_many_arguments)]
unsafe fn dispatch_forward(
    isa: Isa,
    g: &Geometry,
    xs: &[f32],
    params: Params,
    c0: usize,
    n: usize,
    p0: usize,
    p1: usize,
    out: *mut f32,
) {
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::forward_avx512(g, xs, params, c0, n, p0, p1, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::forward_avx2(g, xs, params, c0, n, p0, p1, out),
            Isa::Portable => forward_block::<Portable>(g, xs, params, c0, n, p0, p1, out),
        }
    }
}

fn dispatch_weight(isa: Isa, g: &Geometry, images: usize, xs: &[f32], ds: &[f32], acc: &mut [f32]) {
    // SAFETY: `isa` comes from `Isa::available`, so the CPU has its instructions.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::weight_avx512(g, images, xs, ds, acc),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::weight_avx2(g, images, xs, ds, acc),
            Isa::Portable => weight_images::<Portable, 2, false>(g, images, xs, ds, acc),
        }
    }
}

/// The few vector operations the kernels need.
trait Simd {
    const LANES: usize;
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(v: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores every lane at `p ..`.
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// Interleaves the lanes of `a` and `b`: `([a0, b0, a1, b1, ...], [..., a_last, b_last])`.
    unsafe fn zip(a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// The inverse of [`zip`](Simd::zip): the even and the odd lanes of `a` then `b`.
    unsafe fn unzip(a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// `a * b + c`
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn hsum(v: Self::V) -> f32;
    /// Stores lanes `lo..hi` of `v` at `p + lo .. p + hi`, leaving the rest of memory alone.
    unsafe fn store_lanes(p: *mut f32, v: Self::V, lo: usize, hi: usize);
    /// Lane-wise `max(v, 0)`, NaN kept (x86 `max` returns its second operand on NaN).
    unsafe fn max0(v: Self::V) -> Self::V;
    /// Lane-wise `min(v, 0)`, NaN kept.
    unsafe fn min0(v: Self::V) -> Self::V;
}

/// Plain Rust arrays; LLVM vectorises them for whatever the build targets.
struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    type V = [f32; 8];
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        [v; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 8], v) }
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    unsafe fn zip(a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        let z = |i: usize| {
            if i.is_multiple_of(2) {
                a[i / 2]
            } else {
                b[i / 2]
            }
        };
        (std::array::from_fn(z), std::array::from_fn(|i| z(i + 8)))
    }
    #[inline(always)]
    unsafe fn unzip(a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        let at = |i: usize| if i < 8 { a[i] } else { b[i - 8] };
        (
            std::array::from_fn(|i| at(2 * i)),
            std::array::from_fn(|i| at(2 * i + 1)),
        )
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn hsum(v: Self::V) -> f32 {
        v.iter().sum()
    }
    #[inline(always)]
    unsafe fn store_lanes(p: *mut f32, v: Self::V, lo: usize, hi: usize) {
        for (j, &x) in v.iter().enumerate().take(hi).skip(lo) {
            unsafe { *p.wrapping_add(j) = x };
        }
    }
    #[inline(always)]
    unsafe fn max0(v: Self::V) -> Self::V {
        v.map(|x| if x < 0.0 { 0.0 } else { x })
    }
    #[inline(always)]
    unsafe fn min0(v: Self::V) -> Self::V {
        v.map(|x| if x > 0.0 { 0.0 } else { x })
    }
}

/// One task of the forward kernel: channels `c0..c0 + n` (n from [`Isa::channel_blocks`]) at
/// positions `p0..p1`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_block<S: Simd>(
    g: &Geometry,
    xs: &[f32],
    params: Params,
    c0: usize,
    n: usize,
    p0: usize,
    p1: usize,
    out: *mut f32,
) {
    unsafe {
        match n {
            8 => forward_tile::<S, 8, 3>(g, xs, params, c0, p0, p1, out),
            6 => forward_tile::<S, 6, 2>(g, xs, params, c0, p0, p1, out),
            4 => forward_tile::<S, 4, 2>(g, xs, params, c0, p0, p1, out),
            2 => forward_tile::<S, 2, 4>(g, xs, params, c0, p0, p1, out),
            _ => forward_tile::<S, 1, 8>(g, xs, params, c0, p0, p1, out),
        }
    }
}

/// Register tile: `CB` output channels x `PV` vectors of pixels; `out` points at channel c0.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_tile<S: Simd, const CB: usize, const PV: usize>(
    g: &Geometry,
    xs: &[f32],
    params: Params,
    c0: usize,
    p0: usize,
    p1: usize,
    out: *mut f32,
) {
    // `params.weight` arrives block-packed (see `forward_grid`).
    let Params {
        weight,
        bias,
        prelu,
    } = params;
    let (cin, wp, plane, kk) = (g.cin, g.wp(), g.plane(), g.k * g.k);
    let (ho, wo) = (g.ho(), g.wo());
    let out_plane = ho * wo;
    let wb = &weight[c0 * cin * kk..(c0 + CB) * cin * kk];
    let offsets: Vec<usize> = (0..kk).map(|t| (t / g.k) * wp + t % g.k).collect();
    let step = PV * S::LANES;
    let mut p = p0;
    while p < p1 {
        // Positions past p1 would belong to another task: shrink the tile at the end.
        let pv = ((p1 - p) / S::LANES).min(PV);
        unsafe {
            let mut acc = [[S::zero(); PV]; CB];
            if let Some(bias) = bias {
                for (c, row) in acc.iter_mut().enumerate() {
                    *row = [S::splat(bias[c0 + c]); PV];
                }
            }
            let xb = xs.as_ptr().add(p);
            let wptr = wb.as_ptr();
            for ci in 0..cin {
                let xc = xb.add(ci * plane);
                for (k, &off) in offsets.iter().enumerate() {
                    // Loads past the tile's end stay inside the plane's slack (see `plane`).
                    let xv: [S::V; PV] =
                        std::array::from_fn(|v| S::load(xc.add(off + v * S::LANES)));
                    let wk = wptr.add((ci * kk + k) * CB);
                    for (c, row) in acc.iter_mut().enumerate() {
                        let wv = S::splat(*wk.add(c));
                        for v in 0..PV {
                            row[v] = S::fma(xv[v], wv, row[v]);
                        }
                    }
                }
            }
            for (c, row) in acc.iter().enumerate() {
                let dst = out.add(c * out_plane);
                let slope = prelu.map(|a| S::splat(a[c0 + c]));
                for (v, val) in row.iter().enumerate().take(pv) {
                    let val = match slope {
                        Some(a) => S::fma(S::min0(*val), a, S::max0(*val)),
                        None => *val,
                    };
                    store_grid::<S>(val, p + v * S::LANES, wp, wo, ho, dst);
                }
            }
        }
        p += step.min(pv * S::LANES);
    }
}

/// Stores a vector of grid values starting at flat position `q` (rows `wp` long) into the
/// NCHW plane `dst` (`ho x wo`): one masked store per row piece, junk columns and positions
/// past the last row left out.
#[inline(always)]
unsafe fn store_grid<S: Simd>(v: S::V, q: usize, wp: usize, wo: usize, ho: usize, dst: *mut f32) {
    let (mut y, mut x) = (q / wp, q % wp);
    let mut i = 0;
    while i < S::LANES && y < ho {
        let run = (wp - x).min(S::LANES - i);
        if x < wo {
            let n = run.min(wo - x);
            // Lane i + j goes to (y, x + j): the base is where lane 0 would go, which may lie
            // before `dst`, so it is formed with wrapping arithmetic; only lanes i..i + n,
            // all inside the plane, are written.
            let base = dst.wrapping_add(y * wo + x).wrapping_sub(i);
            unsafe { S::store_lanes(base, v, i, i + n) };
        }
        i += run;
        x = 0;
        y += 1;
    }
}

/// Weight gradient of `images` consecutive images, added into `acc` (`[cout, cin, k, k]`).
/// The vector accumulators run over all the images before one horizontal sum. Output channels
/// go in blocks of `CO` (the last block smaller): each input load feeds `CO` FMAs, so larger
/// blocks need fewer loads per FMA, as many as the register file allows (`CO * taps`
/// accumulators).
#[inline(always)]
unsafe fn weight_images<S: Simd, const CO: usize, const ROWS: bool>(
    g: &Geometry,
    images: usize,
    xs: &[f32],
    ds: &[f32],
    acc: &mut [f32],
) {
    let mut co = 0;
    while co < g.cout {
        let n = (g.cout - co).min(CO);
        unsafe {
            match n {
                3 => weight_block::<S, 3, ROWS>(g, images, xs, ds, acc, co),
                2 => weight_block::<S, 2, ROWS>(g, images, xs, ds, acc, co),
                _ => {
                    for c in co..co + n {
                        weight_block::<S, 1, ROWS>(g, images, xs, ds, acc, c)
                    }
                }
            }
        }
        co += n;
    }
}

/// [`weight_images`] for output channels `co..co + C`.
#[inline(always)]
unsafe fn weight_block<S: Simd, const C: usize, const ROWS: bool>(
    g: &Geometry,
    images: usize,
    xs: &[f32],
    ds: &[f32],
    acc: &mut [f32],
    co: usize,
) {
    let wp = g.wp();
    for ci in 0..g.cin {
        let at = Planes { g, xs, ds, ci, co };
        unsafe {
            match g.k {
                1 => weight_taps::<S, C, 1>(&at, images, acc, 0, [0]),
                3 if !ROWS => {
                    // All 9 taps in one sweep.
                    let offs = std::array::from_fn(|t| (t / 3) * wp + t % 3);
                    weight_taps::<S, C, 9>(&at, images, acc, 0, offs)
                }
                3 => weight_rows::<S, C, 3>(&at, images, acc),
                _ => weight_rows::<S, C, 5>(&at, images, acc),
            }
        }
    }
}

/// [`weight_block`] one kernel row (`K` taps) per sweep.
#[inline(always)]
unsafe fn weight_rows<S: Simd, const C: usize, const K: usize>(
    at: &Planes,
    images: usize,
    acc: &mut [f32],
) {
    for ky in 0..K {
        let offs = std::array::from_fn(|kx| ky * at.g.wp() + kx);
        unsafe { weight_taps::<S, C, K>(at, images, acc, ky * K, offs) };
    }
}

/// Taps `tap0..tap0 + T` (at plane offsets `offs`) of [`weight_block`]: one sweep per image,
/// the vector sums carried across the images, then one horizontal sum per tap and channel.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // taps index the accumulators' inner axis
unsafe fn weight_taps<S: Simd, const C: usize, const T: usize>(
    at: &Planes,
    images: usize,
    acc: &mut [f32],
    tap0: usize,
    offs: [usize; T],
) {
    unsafe {
        let mut a = [[S::zero(); T]; C];
        for b in 0..images {
            let (xc, d) = at.image::<C>(b);
            a = weight_sweep::<S, C, T>(xc, d, at.g.grid(), offs, a);
        }
        for t in 0..T {
            at.put::<S, C>(acc, tap0 + t, &std::array::from_fn(|c| a[c][t]));
        }
    }
}

/// Where [`weight_block`] reads input channel `ci` and output channels `co..` of an image,
/// and adds a tap's sums. Methods rather than closures, so that they inline into the
/// instruction set's kernel (a closure is a function of its own, compiled without AVX).
struct Planes<'a> {
    g: &'a Geometry,
    xs: &'a [f32],
    ds: &'a [f32],
    ci: usize,
    co: usize,
}

impl Planes<'_> {
    #[inline(always)]
    unsafe fn image<const C: usize>(&self, b: usize) -> (*const f32, [*const f32; C]) {
        let (cin, cout) = (self.g.cin, self.g.cout);
        unsafe {
            let xc = self.xs.as_ptr().add((b * cin + self.ci) * self.g.plane());
            let d = std::array::from_fn(|c| {
                self.ds
                    .as_ptr()
                    .add((b * cout + self.co + c) * self.g.grid())
            });
            (xc, d)
        }
    }

    #[inline(always)]
    unsafe fn put<S: Simd, const C: usize>(&self, acc: &mut [f32], tap: usize, a: &[S::V; C]) {
        let kk = self.g.k * self.g.k;
        for (c, v) in a.iter().enumerate() {
            acc[((self.co + c) * self.g.cin + self.ci) * kk + tap] += unsafe { S::hsum(*v) };
        }
    }
}

/// Sums `x[p + off[t]] * dy_c[p]` over all grid positions, per output channel `c` and tap `t`.
#[inline(always)]
unsafe fn weight_sweep<S: Simd, const C: usize, const T: usize>(
    xc: *const f32,
    d: [*const f32; C],
    grid: usize,
    offs: [usize; T],
    mut a: [[S::V; T]; C],
) -> [[S::V; T]; C] {
    unsafe {
        let mut p = 0;
        while p < grid {
            let y: [S::V; C] = std::array::from_fn(|c| S::load(d[c].add(p)));
            for t in 0..T {
                let xv = S::load(xc.add(p + offs[t]));
                for c in 0..C {
                    a[c][t] = S::fma(xv, y[c], a[c][t]);
                }
            }
            p += S::LANES;
        }
        a
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Geometry, Params, Simd, forward_block, weight_images};
    use std::arch::x86_64::*;

    pub struct Avx512;
    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m512 {
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn zip(a: __m512, b: __m512) -> (__m512, __m512) {
            unsafe {
                let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
                let hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
                (
                    _mm512_permutex2var_ps(a, lo, b),
                    _mm512_permutex2var_ps(a, hi, b),
                )
            }
        }
        #[inline(always)]
        unsafe fn unzip(a: __m512, b: __m512) -> (__m512, __m512) {
            unsafe {
                let even =
                    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
                (
                    _mm512_permutex2var_ps(a, even, b),
                    _mm512_permutex2var_ps(a, odd, b),
                )
            }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn hsum(v: __m512) -> f32 {
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        unsafe fn store_lanes(p: *mut f32, v: __m512, lo: usize, hi: usize) {
            let mask = (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16;
            unsafe { _mm512_mask_storeu_ps(p, mask, v) }
        }
        #[inline(always)]
        unsafe fn max0(v: __m512) -> __m512 {
            unsafe { _mm512_max_ps(_mm512_setzero_ps(), v) }
        }
        #[inline(always)]
        unsafe fn min0(v: __m512) -> __m512 {
            unsafe { _mm512_min_ps(_mm512_setzero_ps(), v) }
        }
    }

    pub struct Avx2;
    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m256 {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn zip(a: __m256, b: __m256) -> (__m256, __m256) {
            unsafe {
                // In-lane unpacks give [a0 b0 a1 b1 | a4 b4 a5 b5] and [a2 b2 a3 b3 | a6 ...].
                let (l, h) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
                (
                    _mm256_permute2f128_ps(l, h, 0x20),
                    _mm256_permute2f128_ps(l, h, 0x31),
                )
            }
        }
        #[inline(always)]
        unsafe fn unzip(a: __m256, b: __m256) -> (__m256, __m256) {
            unsafe {
                // [a0 a2 b0 b2 | a4 a6 b4 b6], then the middle 64-bit pairs swapped.
                let even = _mm256_shuffle_ps::<0x88>(a, b);
                let odd = _mm256_shuffle_ps::<0xdd>(a, b);
                let fix = |v: __m256| {
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0xd8>(_mm256_castps_pd(v)))
                };
                (fix(even), fix(odd))
            }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn hsum(v: __m256) -> f32 {
            let mut a = [0f32; 8];
            unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
            a.iter().sum()
        }
        #[inline(always)]
        unsafe fn store_lanes(p: *mut f32, v: __m256, lo: usize, hi: usize) {
            // AMD's masked stores take many cycles each (a tenth of the convolution's time went
            // to them): a whole vector takes a plain store, a part aligned half vectors and
            // single lanes.
            if lo == 0 && hi == 8 {
                return unsafe { _mm256_storeu_ps(p, v) };
            }
            unsafe {
                let lanes: [f32; 8] = std::mem::transmute(v);
                let mut j = lo;
                while j < hi {
                    if j.is_multiple_of(4) && hi - j >= 4 {
                        let half = if j == 0 {
                            _mm256_castps256_ps128(v)
                        } else {
                            _mm256_extractf128_ps::<1>(v)
                        };
                        _mm_storeu_ps(p.add(j), half);
                        j += 4;
                    } else {
                        *p.add(j) = lanes[j];
                        j += 1;
                    }
                }
            }
        }
        #[inline(always)]
        unsafe fn max0(v: __m256) -> __m256 {
            unsafe { _mm256_max_ps(_mm256_setzero_ps(), v) }
        }
        #[inline(always)]
        unsafe fn min0(v: __m256) -> __m256 {
            unsafe { _mm256_min_ps(_mm256_setzero_ps(), v) }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn forward_avx512(
        g: &Geometry,
        xs: &[f32],
        params: Params,
        c0: usize,
        n: usize,
        p0: usize,
        p1: usize,
        out: *mut f32,
    ) {
        unsafe { forward_block::<Avx512>(g, xs, params, c0, n, p0, p1, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn forward_avx2(
        g: &Geometry,
        xs: &[f32],
        params: Params,
        c0: usize,
        n: usize,
        p0: usize,
        p1: usize,
        out: *mut f32,
    ) {
        unsafe { forward_block::<Avx2>(g, xs, params, c0, n, p0, p1, out) }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn weight_avx512(
        g: &Geometry,
        images: usize,
        xs: &[f32],
        ds: &[f32],
        acc: &mut [f32],
    ) {
        unsafe { weight_images::<Avx512, 3, false>(g, images, xs, ds, acc) }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weight_avx2(
        g: &Geometry,
        images: usize,
        xs: &[f32],
        ds: &[f32],
        acc: &mut [f32],
    ) {
        // 16 registers: 3x3 kernels a row at a time too (3 channels x 3 taps of accumulators;
        // 2 x 9 spilled), 5x5 ones 2 channels x 5 taps.
        unsafe {
            if g.k == 3 {
                weight_images::<Avx2, 3, true>(g, images, xs, ds, acc)
            } else {
                weight_images::<Avx2, 2, true>(g, images, xs, ds, acc)
            }
        }
    }
}

/// PReLU's slope for channel `c` (one shared slope or one per channel).
pub(crate) fn alpha_at(alpha: &[f32], c: usize) -> f32 {
    if alpha.len() == 1 { alpha[0] } else { alpha[c] }
}

/// `prelu(x * k[c] + b[c])` into a new buffer.
pub(crate) fn affine_prelu_values(
    x: &[f32],
    dims: (usize, usize, usize),
    k: &[f32],
    b: &[f32],
    alpha: &[f32],
) -> Vec<f32> {
    let (_, c, p) = dims;
    let mut out = uninit(x.len());
    out.par_chunks_mut(p)
        .zip(x.par_chunks(p))
        .enumerate()
        .for_each(|(i, (dst, src))| {
            let ch = i % c;
            affine_prelu_plane(dst, src, k[ch], b[ch], alpha_at(alpha, ch));
        });
    out
}

/// One plane of [`affine_prelu_values`].
#[multiversion::multiversion(targets = "simd")]
fn affine_prelu_plane(dst: &mut [f32], src: &[f32], k: f32, b: f32, a: f32) {
    for (o, &v) in dst.iter_mut().zip(src) {
        let z = v * k + b;
        *o = if z > 0.0 { z } else { a * z };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Space-to-depth puts `x[ci, k i + a, k j + b]` at channel `ci k k + a k + b`, `(i, j)`,
    /// and depth-to-space undoes it, for k = 1, 2, 3 and several images.
    #[test]
    fn space_depth_shuffles() {
        for k in [1, 2, 3] {
            let (n, c, h, w) = (2, 3, 2 * k, 3 * k);
            let x: Vec<f32> = (0..n * c * h * w).map(|v| v as f32).collect();
            let s = space_to_depth(&x, [n, c, h, w], k);
            let (ho, wo) = (h / k, w / k);
            // Output element (image, channel ci k k + a k + b, i, j), decoded from its index.
            for (idx, &dst) in s.iter().enumerate() {
                let (j, i) = (idx % wo, idx / wo % ho);
                let (ch, img) = (idx / (wo * ho) % (c * k * k), idx / (wo * ho * c * k * k));
                let (ci, a, b) = (ch / (k * k), ch % (k * k) / k, ch % k);
                let src = x[((img * c + ci) * h + k * i + a) * w + k * j + b];
                assert_eq!(src, dst, "k {k}");
            }
            assert_eq!(depth_to_space(&s, [n, c * k * k, ho, wo], k), x, "k {k}");
        }
    }

    /// Direct definition of the convolution, in f64.
    fn naive(g: &Geometry, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        let (ho, wo) = (g.ho(), g.wo());
        let mut out = vec![0f32; g.batch * g.cout * ho * wo];
        for n in 0..g.batch {
            for co in 0..g.cout {
                for y in 0..ho {
                    for xx in 0..wo {
                        let mut s = b.map_or(0.0, |b| b[co] as f64);
                        for ci in 0..g.cin {
                            for ky in 0..g.k {
                                for kx in 0..g.k {
                                    let iy = (y + ky) as isize - g.pad_h as isize;
                                    let ix = (xx + kx) as isize - g.pad_w as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((n * g.cin + ci) * g.h + iy as usize) * g.w
                                        + ix as usize];
                                    s += xv as f64
                                        * w[((co * g.cin + ci) * g.k + ky) * g.k + kx] as f64;
                                }
                            }
                        }
                        out[((n * g.cout + co) * ho + y) * wo + xx] = s as f32;
                    }
                }
            }
        }
        out
    }

    /// Direct definition of the weight gradient, in f64, with the sum of the terms' magnitudes
    /// per weight (the scale of a float sum's rounding).
    fn naive_weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (ho, wo, kk) = (g.ho(), g.wo(), g.k * g.k);
        let mut dw = vec![0f64; g.cout * g.cin * kk];
        let mut mag = vec![0f64; dw.len()];
        for n in 0..g.batch {
            for co in 0..g.cout {
                for ci in 0..g.cin {
                    for tap in 0..kk {
                        let (ky, kx) = (tap / g.k, tap % g.k);
                        let at = (co * g.cin + ci) * kk + tap;
                        for y in 0..ho {
                            for xx in 0..wo {
                                let iy = (y + ky) as isize - g.pad_h as isize;
                                let ix = (xx + kx) as isize - g.pad_w as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x
                                    [((n * g.cin + ci) * g.h + iy as usize) * g.w + ix as usize]
                                    as f64;
                                let term = xv * dy[((n * g.cout + co) * ho + y) * wo + xx] as f64;
                                dw[at] += term;
                                mag[at] += term.abs();
                            }
                        }
                    }
                }
            }
        }
        (dw, mag)
    }

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn zip_and_unzip_interleave_lanes() {
        fn check<S: Simd>() {
            let n = S::LANES;
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| 100.0 + i as f32).collect();
            let interleaved: Vec<f32> = (0..2 * n)
                .map(|i| if i % 2 == 0 { a[i / 2] } else { b[i / 2] })
                .collect();
            let mut out = vec![0f32; 2 * n];
            // SAFETY: the caller checked the CPU has S's instructions; every pointer covers
            // LANES floats.
            unsafe {
                let (lo, hi) = S::zip(S::load(a.as_ptr()), S::load(b.as_ptr()));
                S::store(out.as_mut_ptr(), lo);
                S::store(out.as_mut_ptr().add(n), hi);
                assert_eq!(out, interleaved);
                let (even, odd) = S::unzip(lo, hi);
                S::store(out.as_mut_ptr(), even);
                S::store(out.as_mut_ptr().add(n), odd);
            }
            assert_eq!(out[..n], a);
            assert_eq!(out[n..], b);
        }
        for isa in Isa::available() {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => check::<x86::Avx2>(),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => check::<x86::Avx512>(),
                Isa::Portable => check::<Portable>(),
            }
        }
    }

    #[test]
    fn padding_matches_its_definition() {
        // (h, w, top, left, row, extra tail)
        for (h, w, top, left, row, tail) in [
            (28, 28, 1, 1, 29, 40),
            (14, 14, 2, 2, 16, 0),
            (7, 9, 0, 0, 9, 3),
            (5, 3, 4, 2, 21, 17),
            (0, 4, 1, 1, 5, 2),
        ] {
            let src = data(h * w, 8);
            let len = (top + h) * row + left + tail;
            let mut expect = vec![0f32; len];
            for y in 0..h {
                for x in 0..w {
                    expect[(top + y) * row + left + x] = src[y * w + x];
                }
            }
            let mut dst = vec![f32::NAN; len];
            pad_plane(&mut dst, &src, (h, w), (top, left), row);
            assert_eq!(dst, expect, "{h}x{w} at ({top}, {left}) rows of {row}");
        }
    }

    #[test]
    fn an_image_gives_the_same_bits_alone_and_in_a_batch() {
        // Large batches take other paths (image by image) than small ones; a server answering
        // one image must agree exactly with the same image scored in a batch.
        // 3x3 and 5x5 at 10x14 take the Winograd path (with 8 lanes), at 10x9 the direct one.
        for (cin, cout, k, w) in [
            (16, 16, 3, 14),
            (8, 16, 5, 14),
            (16, 16, 3, 9),
            (3, 10, 3, 9),
            (6, 16, 5, 9),
        ] {
            let g = Geometry {
                batch: 40,
                cin,
                cout,
                h: 10,
                w,
                pad_h: k / 2,
                pad_w: k / 2,
                k,
            };
            let x = data(g.batch * cin * g.h * g.w, 5);
            let w = data(cout * cin * k * k, 6);
            let b = data(cout, 7);
            let all = conv(&g, &x, &w, Some(&b));
            let (xn, yn) = (cin * g.h * g.w, cout * g.ho() * g.wo());
            for i in [0, 17, 39] {
                let one = Geometry { batch: 1, ..g };
                let y = conv(&one, &x[i * xn..(i + 1) * xn], &w, Some(&b));
                assert_eq!(y, all[i * yn..(i + 1) * yn], "{cin}->{cout} k{k} image {i}");
            }
        }
    }

    /// Tolerance of a forward convolution on `isa` against the definition, relative to
    /// `1 + |y|`: 5e-5 on the 6-point Winograd kernels (F(2x2, 5x5), F(4x4, 3x3)), whose
    /// transforms multiply by up to 8 and 1/24 (1.6e-5 at worst on the Madry network's 32 -> 64
    /// layer, 2e-5 on the 3x3 sweep, where the direct kernel gives 3.7e-6 and 1e-6), 1e-5
    /// elsewhere (F(2x2, 3x3) stays within the direct kernel's bound).
    fn forward_tolerance(isa: Isa, g: &Geometry) -> f32 {
        if winograd::applies(isa, g) && (g.k == 5 || winograd::tile_side(g) == 4) {
            5e-5
        } else {
            1e-5
        }
    }

    /// Every "same" 3x3 layer (padding 1) of these heights, widths, channels and batch sizes.
    fn same_3x3(
        heights: &[usize],
        widths: &[usize],
        channels: &[(usize, usize)],
        batches: &[usize],
    ) -> Vec<Geometry> {
        let mut shapes = Vec::new();
        for &h in heights {
            for &w in widths {
                for &(cin, cout) in channels {
                    for &batch in batches {
                        shapes.push(Geometry {
                            batch,
                            cin,
                            cout,
                            h,
                            w,
                            pad_h: 1,
                            pad_w: 1,
                            k: 3,
                        });
                    }
                }
            }
        }
        shapes
    }

    #[test]
    fn winograd_forward_matches_the_definition_over_many_shapes() {
        // 3x3 layers on both tile sizes: widths whose 4x4 tile rows fill 7 or 8 lanes (F(4x4,
        // 3x3)) or too few (F(2x2, 3x3)), row lengths with and without a partial last piece,
        // heights that are not whole tiles; image by image and split across threads.
        let shapes = same_3x3(
            &[1, 3, 4, 6],
            &[14, 16, 25, 28, 31, 32],
            &[(4, 8), (9, 13), (17, 33)],
            &[1, 9],
        );
        let mut four = 0;
        for g in &shapes {
            assert!(winograd::applies(Isa::Portable, g), "{g:?}");
            four += usize::from(winograd::tile_side(g) == 4);
            let x = data(g.batch * g.cin * g.h * g.w, 13);
            let wt = data(g.cout * g.cin * 9, 14);
            let b = data(g.cout, 15);
            let reference = naive(g, &x, &wt, Some(&b));
            for isa in Isa::available() {
                close(
                    &conv_prelu_on(isa, g, &x, &wt, Some(&b), None),
                    &reference,
                    forward_tolerance(isa, g),
                );
            }
        }
        assert_eq!((shapes.len(), four), (144, 96));
    }

    #[test]
    fn winograd_weight_gradient_matches_the_definition_over_many_shapes() {
        // Heights from one row up, widths whose tile rows fill 7 to 16 lanes, channel counts
        // that are and are not whole vectors or register blocks, one image to several per task.
        let shapes = same_3x3(
            &[1, 2, 3, 5],
            &[13, 14, 16, 29, 32],
            &[(8, 8), (9, 13), (17, 33)],
            &[1, 3, 7],
        );
        for g in &shapes {
            assert!(winograd::weight_applies(Isa::Portable, g), "{g:?}");
            let x = data(g.batch * g.cin * g.h * g.w, 11);
            let dy = data(g.batch * g.cout * g.h * g.w, 12);
            let (exact, mag) = naive_weight_grad(g, &x, &dy);
            for isa in Isa::available() {
                let got = conv_weight_grad_on(isa, g, &x, &dy);
                for (i, (&v, (&e, &m))) in got.iter().zip(exact.iter().zip(&mag)).enumerate() {
                    assert!(
                        (v as f64 - e).abs() <= 2e-7 * (1.0 + m),
                        "{isa:?} {g:?} at {i}: {v} vs {e}"
                    );
                }
            }
        }
        assert_eq!(shapes.len(), 180);
    }

    #[test]
    fn forward_and_gradients_match_the_definition() {
        let (mut winograd_shapes, mut winograd_weight_shapes) = (0, 0);
        for g in [
            Geometry {
                batch: 2,
                cin: 3,
                cout: 17,
                h: 9,
                w: 7,
                pad_h: 1,
                pad_w: 1,
                k: 3,
            },
            Geometry {
                batch: 1,
                cin: 1,
                cout: 16,
                h: 28,
                w: 28,
                pad_h: 1,
                pad_w: 1,
                k: 3,
            },
            Geometry {
                batch: 3,
                cin: 16,
                cout: 1,
                h: 14,
                w: 14,
                pad_h: 0,
                pad_w: 2,
                k: 3,
            },
            Geometry {
                batch: 2,
                cin: 32,
                cout: 17,
                h: 6,
                w: 10,
                pad_h: 0,
                pad_w: 0,
                k: 1,
            },
            Geometry {
                batch: 2,
                cin: 1,
                cout: 6,
                h: 28,
                w: 28,
                pad_h: 0,
                pad_w: 0,
                k: 5,
            },
            Geometry {
                batch: 3,
                cin: 6,
                cout: 16,
                h: 12,
                w: 12,
                pad_h: 4,
                pad_w: 1,
                k: 5,
            },
            Geometry {
                batch: 2,
                cin: 5,
                cout: 9,
                h: 5,
                w: 11,
                pad_h: 2,
                pad_w: 0,
                k: 3,
            },
            // Winograd: a Defed layer, odd sizes, and (below) the image-by-image path.
            Geometry {
                batch: 2,
                cin: 16,
                cout: 16,
                h: 28,
                w: 28,
                pad_h: 1,
                pad_w: 1,
                k: 3,
            },
            Geometry {
                batch: 2,
                cin: 8,
                cout: 13,
                h: 9,
                w: 15,
                pad_h: 1,
                pad_w: 1,
                k: 3,
            },
            Geometry {
                batch: 70,
                cin: 5,
                cout: 9,
                h: 7,
                w: 16,
                pad_h: 1,
                pad_w: 1,
                k: 3,
            },
            // The Winograd weight gradient: channels padded to whole vectors, output channels
            // in every register block, several images per task.
            Geometry {
                batch: 9,
                cin: 12,
                cout: 20,
                h: 7,
                w: 14,
                pad_h: 1,
                pad_w: 1,
                k: 3,
            },
            // Winograd F(2x2, 5x5): the Madry network's second layer, odd sizes, and the
            // image-by-image path.
            Geometry {
                batch: 2,
                cin: 32,
                cout: 64,
                h: 14,
                w: 14,
                pad_h: 2,
                pad_w: 2,
                k: 5,
            },
            Geometry {
                batch: 2,
                cin: 8,
                cout: 13,
                h: 9,
                w: 15,
                pad_h: 2,
                pad_w: 2,
                k: 5,
            },
            Geometry {
                batch: 70,
                cin: 5,
                cout: 9,
                h: 7,
                w: 16,
                pad_h: 2,
                pad_w: 2,
                k: 5,
            },
            // Batches large enough for the image-by-image paths (forward: at least 4 images
            // per thread; weight gradient: blocks of `WEIGHT_IMAGES` and a remainder).
            Geometry {
                batch: 67,
                cin: 3,
                cout: 10,
                h: 6,
                w: 5,
                pad_h: 1,
                pad_w: 1,
                k: 3,
            },
            Geometry {
                batch: 65,
                cin: 2,
                cout: 9,
                h: 7,
                w: 8,
                pad_h: 2,
                pad_w: 2,
                k: 5,
            },
        ] {
            let x = data(g.batch * g.cin * g.h * g.w, 1);
            let w = data(g.cout * g.cin * g.k * g.k, 2);
            let b = data(g.cout, 3);
            let reference = naive(&g, &x, &w, Some(&b));
            let tol = forward_tolerance(Isa::best(), &g);
            close(&conv(&g, &x, &w, Some(&b)), &reference, tol);
            // The PReLU epilogue, slopes differing per channel.
            let slopes: Vec<f32> = (0..g.cout).map(|c| 0.1 + 0.05 * c as f32).collect();
            let per = g.ho() * g.wo();
            let activated: Vec<f32> = reference
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v > 0.0 {
                        v
                    } else {
                        slopes[(i / per) % g.cout] * v
                    }
                })
                .collect();
            close(
                &conv_prelu(&g, &x, &w, Some(&b), Some(&slopes)),
                &activated,
                tol,
            );
            // Gradients against the adjoint identity <dy, conv(x)> = <dx, x> = <dw, w>.
            let dy = data(g.batch * g.cout * g.ho() * g.wo(), 4);
            let dx = conv_input_grad(&g, &dy, &w);
            let dw = conv_weight_grad(&g, &x, &dy);
            let weight_reference = naive_weight_grad(&g, &x, &dy);
            // Every instruction set this CPU has (the portable one included, which is what
            // non-x86 machines run) gives the same results.
            for isa in Isa::available() {
                let tol = forward_tolerance(isa, &g);
                close(
                    &conv_prelu_on(isa, &g, &x, &w, Some(&b), None),
                    &reference,
                    tol,
                );
                let params = Params {
                    weight: &w,
                    bias: Some(&b),
                    prelu: None,
                };
                close(&direct(isa, &g, &x, params), &reference, 1e-5);
                close(
                    &conv_prelu_on(isa, &g, &x, &w, Some(&b), Some(&slopes)),
                    &activated,
                    tol,
                );
                // The weight gradient against the exact sum, relative to the sum of its terms'
                // magnitudes: the direct and the Winograd 3x3 kernels stay far inside this (a
                // Winograd 5x5 weight gradient, at 1.4e-6, would not).
                let (exact, mag) = &weight_reference;
                let got = conv_weight_grad_on(isa, &g, &x, &dy);
                for (i, (&v, (&e, &m))) in got.iter().zip(exact.iter().zip(mag)).enumerate() {
                    assert!(
                        (v as f64 - e).abs() <= 2e-7 * (1.0 + m),
                        "{isa:?} {g:?} weight gradient at {i}: {v} vs {e}"
                    );
                }
            }
            // The portable ISA and AVX2 take the Winograd path on the seven shapes listed for
            // it, the Winograd weight gradient on three of them (AVX-512 never does).
            winograd_shapes += usize::from(winograd::applies(Isa::Portable, &g));
            winograd_weight_shapes += usize::from(winograd::weight_applies(Isa::Portable, &g));
            let y = naive(&g, &x, &w, None);
            let dot = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(p, q)| *p as f64 * *q as f64)
                    .sum::<f64>()
            };
            let lhs = dot(&dy, &y);
            assert!(
                (lhs - dot(&dx, &x)).abs() < 1e-4 * (1.0 + lhs.abs()),
                "{g:?} dx"
            );
            assert!(
                (lhs - dot(&dw, &w)).abs() < 1e-4 * (1.0 + lhs.abs()),
                "{g:?} dw"
            );
            let db = bias_grad(g.batch, g.cout, &dy);
            assert_eq!(db.len(), g.cout);
        }
        assert_eq!(winograd_shapes, 7);
        assert_eq!(winograd_weight_shapes, 3);
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// Milliseconds of the fastest of 20 calls after a warm-up one: this machine's speed drifts
    /// with other tenants.
    fn fastest_ms(f: &dyn Fn()) -> f64 {
        f();
        (0..20)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// `cargo test --release --lib kernels::speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_timings() {
        for (cin, cout, hw, k) in [
            (1, 32, 28, 5),
            (32, 64, 14, 5),
            (16, 16, 28, 3),
            (32, 32, 14, 3),
            (1, 16, 28, 3),
            (16, 1, 28, 3),
            (16, 16, 28, 1),
            (32, 32, 14, 1),
        ] {
            let p = k / 2;
            let g = Geometry {
                batch: 64,
                cin,
                cout,
                h: hw,
                w: hw,
                pad_h: p,
                pad_w: p,
                k,
            };
            let x = vec![0.5f32; 64 * cin * hw * hw];
            let w = vec![0.1f32; cout * cin * k * k];
            let dy = vec![0.2f32; 64 * cout * hw * hw];
            let f = fastest_ms(&|| drop(conv(&g, &x, &w, None)));
            let dx = fastest_ms(&|| drop(conv_input_grad(&g, &dy, &w)));
            let dw = fastest_ms(&|| drop(conv_weight_grad(&g, &x, &dy)));
            let pad = fastest_ms(&|| {
                // The whole batch on one thread: the cost of the copies themselves.
                let mut padded = uninit(64 * cin * g.plane());
                pad_planes(&mut padded, &x, (hw, hw), (p, p), g.wp(), g.plane());
            });
            println!("pad {pad:.2}");
            let gf = 2.0 * (k * k * cin * cout * hw * hw * 64) as f64 / 1e6;
            println!(
                "{k}x{k} {cin}->{cout} {hw}x{hw}: fwd {f:.2} ms ({:.0} GFLOP/s), dx {dx:.2}, dw {dw:.2}",
                gf / f
            );
        }
    }

    /// `cargo test --release --lib kernels::speed::shuffles -- --ignored --nocapture`: the
    /// Defed 2x2 stride-2 layers' pieces at inference, batch 64 (fastest of 20 calls).
    #[test]
    #[ignore]
    fn shuffles() {
        let x = vec![0.5f32; 64 * 16 * 28 * 28];
        let s2d = fastest_ms(&|| drop(space_to_depth(&x, [64, 16, 28, 28], 2)));
        let d2s = fastest_ms(&|| drop(depth_to_space(&x, [64, 64, 14, 14], 2)));
        let one = |cin: usize, cout: usize, hw: usize| Geometry {
            batch: 64,
            cin,
            cout,
            h: hw,
            w: hw,
            pad_h: 0,
            pad_w: 0,
            k: 1,
        };
        let w = vec![0.1f32; 64 * 64];
        let (down, up) = (one(64, 32, 14), one(32, 64, 14));
        let fd = fastest_ms(&|| drop(conv(&down, &x[..64 * 64 * 196], &w[..32 * 64], None)));
        let fu = fastest_ms(&|| drop(conv(&up, &x[..64 * 32 * 196], &w[..64 * 32], None)));
        println!(
            "space_to_depth 16x28x28 {s2d:.3} ms, depth_to_space 64x14x14 {d2s:.3} ms, \
             1x1 64->32 at 14x14 {fd:.3} ms, 1x1 32->64 at 14x14 {fu:.3} ms"
        );
    }

    /// `cargo test --release --lib kernels::speed::winograd -- --ignored --nocapture`: the
    /// direct and the Winograd kernel on the Defed layers, interleaved.
    #[test]
    #[ignore]
    fn winograd_against_direct() {
        for (cin, cout, hw, k) in [
            (16, 16, 28, 3),
            (32, 32, 14, 3),
            (4, 16, 28, 3),
            (16, 4, 28, 3),
            (32, 64, 14, 5),
        ] {
            let g = Geometry {
                batch: 64,
                cin,
                cout,
                h: hw,
                w: hw,
                pad_h: k / 2,
                pad_w: k / 2,
                k,
            };
            let x = vec![0.5f32; 64 * cin * hw * hw];
            let w = vec![0.1f32; cout * cin * k * k];
            let dy = vec![0.2f32; 64 * cout * hw * hw];
            let params = Params {
                weight: &w,
                bias: None,
                prelu: None,
            };
            for isa in Isa::available() {
                if !winograd::applies(isa, &g) {
                    continue;
                }
                let (mut d, mut wi) = (f64::INFINITY, f64::INFINITY);
                let (mut dd, mut dwi) = (f64::INFINITY, f64::INFINITY);
                let mut w2 = f64::INFINITY;
                let weight = winograd::weight_applies(isa, &g);
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    drop(direct(isa, &g, &x, params));
                    d = d.min(t.elapsed().as_secs_f64() * 1e3);
                    let t = std::time::Instant::now();
                    drop(winograd::forward(isa, &g, &x, params));
                    wi = wi.min(t.elapsed().as_secs_f64() * 1e3);
                    if k == 3 {
                        let other = 6 - winograd::tile_side(&g);
                        let t = std::time::Instant::now();
                        drop(winograd::forward_sized(isa, &g, &x, params, other));
                        w2 = w2.min(t.elapsed().as_secs_f64() * 1e3);
                    }
                    if weight {
                        let t = std::time::Instant::now();
                        drop(weight_direct(isa, &g, &x, &dy));
                        dd = dd.min(t.elapsed().as_secs_f64() * 1e3);
                        let t = std::time::Instant::now();
                        drop(winograd::weight_grad(isa, &g, &x, &dy));
                        dwi = dwi.min(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
                let weight_line = if weight {
                    format!(
                        "; weight gradient: direct {dd:.2} ms, winograd {dwi:.2} ms ({:.2}x)",
                        dd / dwi
                    )
                } else {
                    String::new()
                };
                println!(
                    "{isa:?} {k}x{k} {cin}->{cout} {hw}x{hw}: direct {d:.2} ms, winograd {wi:.2} \
                     ms ({:.2}x; the other tile size {w2:.2} ms){weight_line}",
                    d / wi
                );
            }
        }
    }
}
