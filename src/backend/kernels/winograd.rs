//! Winograd F(2x2, 3x3), F(4x4, 3x3) and F(2x2, 5x5) for the "same" 3x3 and 5x5 convolutions
//! with a few channels or more (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016).
//!
//! Each `m x m` block of outputs ("tile") is `A^T [U . V] A` with `U = G g G^T` the transformed
//! kernel and `V = B^T d B` the transformed `(m + r - 1) x (m + r - 1)` input patch: per input
//! channel, F(2x2, 3x3) does 16 multiplications per 4 outputs where the direct 3x3 kernel does
//! 36, F(4x4, 3x3) 36 per 16, F(2x2, 5x5) 36 per 4 where the direct kernel does 100, at the
//! price of the two transforms, which are amortised over the output and input channels. The
//! element-wise products summed over input channels are small matrix products (output channels
//! x input channels times input channels x tiles), run with the same register tiles as the
//! direct kernel (channels broadcast, tiles in vector lanes). The 6-point transforms (F(4x4,
//! 3x3) and F(2x2, 5x5) share `B`) use the points 0, 1, -1, 2, -2 and infinity; their largest
//! entries (5 in `B`, 8 in F(4, 3)'s `A`, 1/24 in `G`) cost some rounding, which the tests
//! bound.
//!
//! Layout. A vector holds `LANES` horizontally adjacent tiles of one tile row; tile rows are
//! rounded up to whole vectors (`Tiles::twv`), and the junk lanes are never stored. The
//! transformed input of one image is `[tile vector][element][cin][LANES]`: the products read
//! each element's channels as one contiguous run. Tile `tx` reads input columns `m tx .. m tx +
//! m + r - 1`: with each padded input row split into its `m` phases (columns `m i + p`), these
//! are unit-stride loads (each phase shifted by at most one), so the input transform needs no
//! shuffles; only the output's `m` columns per tile are interleaved on the way out.
//!
//! The weight gradient of the 3x3 layers ([`weight_grad`]) runs F(2x2, 3x3) backwards, with
//! channels rather than tiles in the vector lanes (its sums run over tiles).
//!
//! Each output is the same sum in the same order whichever task computes it, so an image gives
//! the same bits alone and in a batch. The sums differ from the direct kernel's in rounding
//! (the transforms add and subtract before multiplying): the tests hold them to bounds against
//! the definition.

use rayon::prelude::*;

use super::{Geometry, Isa, Params, Portable, SendPtr, Simd, uninit};

/// Whether the Winograd path computes this convolution: 3x3 with padding 1 or 5x5 with padding
/// 2 on every side, at least 4 input and 8 output channels (the input transform is paid once
/// per input channel and saves multiplications for every output channel: with 4 outputs it cost
/// more than it saved, 4 -> 16 at 28x28 ran 1.25x faster, 16 -> 4 0.85x), and tile rows that
/// waste at most a fifth of the lanes. Not with AVX-512: there the direct kernel's larger
/// register tile (8 x 3) beat an earlier F(2x2, 3x3) (BENCHMARKS, "Tried and dropped"), and no
/// AVX-512 machine has measured this one.
pub(super) fn applies(isa: Isa, g: &Geometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        return false;
    }
    let t = Tiles::new(g);
    (g.k == 3 || g.k == 5)
        && g.pad_h == g.k / 2
        && g.pad_w == g.k / 2
        && g.cin >= 4
        && g.cout >= 8
        && t.lanes_used()
}

/// Side of the output tiles [`forward`] uses for this shape (2 or 4).
#[cfg(test)]
pub(super) fn tile_side(g: &Geometry) -> usize {
    Tiles::new(g).m
}

/// Lanes of the kernels [`applies`] picks (AVX2's and the portable ones).
const LANES: usize = 8;

/// The tile grid of one output plane.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    /// Kernel size (3 or 5).
    r: usize,
    /// Output tile side (2, or 4 for F(4x4, 3x3)); tiles read `m + r - 1` input rows and
    /// columns.
    m: usize,
    /// Tile rows.
    th: usize,
    /// Tiles per row.
    tw: usize,
    /// Tiles per row rounded up to whole vectors.
    twv: usize,
    /// Length of one phase (the columns `m i + p` for one `p`) of a split input row:
    /// `twv + (m + r - 2) / m`, so that the shifted loads of the last vector stay inside.
    phase_len: usize,
}

impl Tiles {
    /// The forward kernel's grid: 4x4 output tiles (F(4x4, 3x3): 36 multiplications per 16
    /// outputs and input channel, against F(2x2, 3x3)'s 16 per 4) for 3x3 kernels where a tile
    /// row wastes at most a fifth of its lanes (28x28 planes, not 14x14), 2x2 tiles otherwise.
    /// The 16 -> 16 layer at 28x28 ran 1.19x faster with AVX2 and 1.34x with the portable
    /// kernels, the Defed inference 5% faster; its transforms multiply by up to 8 and 1/24, so
    /// it rounds like F(2x2, 5x5) (2e-5 of `1 + |y|` at worst in the tests, the direct kernel
    /// 1e-6).
    fn new(g: &Geometry) -> Tiles {
        let t = Tiles::sized(g, 4);
        if g.k == 3 && t.lanes_used() {
            t
        } else {
            Tiles::sized(g, 2)
        }
    }
    /// The grid of `m x m` output tiles.
    fn sized(g: &Geometry, m: usize) -> Tiles {
        let (th, tw) = (g.ho().div_ceil(m), g.wo().div_ceil(m));
        let twv = tw.div_ceil(LANES) * LANES;
        Tiles {
            r: g.k,
            m,
            th,
            tw,
            twv,
            phase_len: twv + (m + g.k - 2) / m,
        }
    }
    /// Whether tile rows waste at most a fifth of the lanes.
    fn lanes_used(&self) -> bool {
        self.twv * 4 <= self.tw * 5
    }
    /// Side of the input tile and of the transformed one (`m + r - 1`).
    fn alpha(&self) -> usize {
        self.m + self.r - 1
    }
    /// Tiles per channel, junk lanes included.
    fn count(&self) -> usize {
        self.th * self.twv
    }
    /// Vectors of tiles per channel.
    fn vectors(&self) -> usize {
        self.count() / LANES
    }
    /// Padded input rows the tiles read.
    fn rows(&self) -> usize {
        self.m * self.th + self.r - 1
    }
    /// Length of one split input row (its `m` phases).
    fn stride(&self) -> usize {
        self.m * self.phase_len
    }
    /// Transformed elements per tile.
    fn elements(&self) -> usize {
        self.alpha() * self.alpha()
    }
    /// Length of one image's transformed input.
    fn transformed(&self, cin: usize) -> usize {
        self.elements() * cin * self.count()
    }
}

/// `G` of F(2, 3) (`4 x 3`).
const G3: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// `G` of F(2, 5) (`6 x 5`), points 0, 1, -1, 2, -2 and infinity.
const G5: [[f32; 5]; 6] = [
    [0.25, 0.0, 0.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 3.0, 2.0 / 3.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, -1.0 / 3.0, 2.0 / 3.0],
    [0.0, 0.0, 0.0, 0.0, 1.0],
];

/// `G` of F(4, 3) (`6 x 3`), the same points: with F(2, 5) it shares `B` (`bt6`).
const G43: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// The kernels transformed (`G g G^T`) and laid out per channel block as
/// `[element][cin][block]`, so one element's block of output channels is adjacent; block
/// `c0..c0 + n` starts at `elements * c0 * cin`. Computed on every call (a layer's weights
/// change from step to step): fixed-size loops, cheap next to the products even for one image.
fn transform_weights(
    t: &Tiles,
    g: &Geometry,
    weight: &[f32],
    blocks: &[(usize, usize)],
) -> Vec<f32> {
    match (t.r, t.m) {
        (3, 2) => transform_weights_sized::<3, 4>(g, weight, blocks, &G3),
        (3, _) => transform_weights_sized::<3, 6>(g, weight, blocks, &G43),
        _ => transform_weights_sized::<5, 6>(g, weight, blocks, &G5),
    }
}

fn transform_weights_sized<const R: usize, const A: usize>(
    g: &Geometry,
    weight: &[f32],
    blocks: &[(usize, usize)],
    gm: &[[f32; R]; A],
) -> Vec<f32> {
    let e = A * A;
    // Every element is written below (each block, channel and element once).
    let mut u = uninit(e * g.cout * g.cin);
    for &(c0, n) in blocks {
        let dst = &mut u[e * c0 * g.cin..e * (c0 + n) * g.cin];
        for j in 0..n {
            for ci in 0..g.cin {
                let k = &weight[((c0 + j) * g.cin + ci) * R * R..][..R * R];
                // g G^T (R x A), then G (g G^T).
                let mut right = [[0f32; A]; R];
                for (ky, row) in right.iter_mut().enumerate() {
                    for (x, v) in row.iter_mut().enumerate() {
                        for kx in 0..R {
                            *v += k[ky * R + kx] * gm[x][kx];
                        }
                    }
                }
                for y in 0..A {
                    for x in 0..A {
                        let mut v = 0f32;
                        for (ky, row) in right.iter().enumerate() {
                            v += gm[y][ky] * row[x];
                        }
                        dst[((y * A + x) * g.cin + ci) * n + j] = v;
                    }
                }
            }
        }
    }
    u
}

/// Forward convolution (bias and PReLU as in the direct kernel) for shapes where
/// [`applies`] holds; NCHW in, NCHW out.
pub(super) fn forward(isa: Isa, g: &Geometry, x: &[f32], params: Params) -> Vec<f32> {
    forward_tiles(isa, g, x, params, Tiles::new(g))
}

/// [`forward`] with `m x m` output tiles (F(2x2, 3x3) against F(4x4, 3x3) in the speed test).
#[cfg(test)]
pub(super) fn forward_sized(
    isa: Isa,
    g: &Geometry,
    x: &[f32],
    params: Params,
    m: usize,
) -> Vec<f32> {
    forward_tiles(isa, g, x, params, Tiles::sized(g, m))
}

fn forward_tiles(isa: Isa, g: &Geometry, x: &[f32], params: Params, t: Tiles) -> Vec<f32> {
    let blocks = super::channel_blocks(isa, g.cout);
    let u = transform_weights(&t, g, params.weight, &blocks);
    let params = Params {
        weight: &u,
        ..params
    };
    let out_plane = g.ho() * g.wo();
    let (xn, vn) = (g.cin * g.h * g.w, t.transformed(g.cin));
    let split = g.cin * t.rows() * t.stride();
    // Every (image, channel, y, x < wo) is written exactly once below.
    let mut out = uninit(g.batch * g.cout * out_plane);
    let threads = rayon::current_num_threads();
    let (vectors, image_out) = (t.vectors(), g.cout * out_plane);
    if g.batch >= threads * 4 {
        // Two images at a time: their transformed inputs stay in cache for every channel block,
        // and a plane's odd number of tile vectors (7 on 14x14 and 28x28 planes) pairs up with
        // the other image's instead of running alone.
        const IMAGES: usize = 2;
        out.par_chunks_mut((IMAGES * image_out).max(1))
            .zip(x.par_chunks((IMAGES * xn).max(1)))
            .for_each_init(
                || (uninit(split), uninit(IMAGES * vn)),
                |(rows, v), (o, xs)| {
                    let images = xs.len() / xn.max(1);
                    let outputs = Outputs {
                        ptr: o.as_mut_ptr(),
                        vectors,
                        stride: image_out,
                    };
                    // SAFETY: `rows` and the first `images` transformed inputs of `v` are fully
                    // written by the transform before they are read; the outputs cover these
                    // images.
                    unsafe {
                        for (xi, vi) in xs.chunks_exact(xn).zip(v.chunks_exact_mut(vn)) {
                            dispatch_input(isa, &t, g, xi, rows, vi);
                        }
                        for &(c0, n) in &blocks {
                            let v1 = images * vectors;
                            dispatch_multiply(isa, &t, g, v, params, c0, n, 0, v1, outputs);
                        }
                    }
                },
            );
        return out;
    }
    // Few images: transform them all, then split each image's tiles across the threads.
    // Every element is written by the transform.
    let mut v = uninit(g.batch * vn);
    v.par_chunks_mut(vn)
        .zip(x.par_chunks(xn.max(1)))
        .for_each_init(
            || uninit(split),
            // SAFETY: writes this image's transformed input only.
            |rows, (vi, xi)| unsafe { dispatch_input(isa, &t, g, xi, rows, vi) },
        );
    let optr = SendPtr(out.as_mut_ptr());
    let splits = (threads * 4).div_ceil(g.batch * blocks.len()).max(1);
    let span = vectors.div_ceil(splits).max(1);
    let tasks: Vec<(usize, usize, usize, usize)> = (0..g.batch)
        .flat_map(|b| blocks.iter().map(move |&(c, n)| (b, c, n)))
        .flat_map(|(b, c, n)| (0..vectors).step_by(span).map(move |s| (b, c, n, s)))
        .collect();
    tasks.into_par_iter().for_each(|(b, c0, n, s)| {
        let vb = &v[b * vn..(b + 1) * vn];
        // SAFETY: each task writes channels c0..c0 + n of image b, tile vectors s..s + span.
        unsafe {
            let o = Outputs {
                ptr: optr.get().add(b * image_out),
                vectors,
                stride: image_out,
            };
            dispatch_multiply(isa, &t, g, vb, params, c0, n, s, (s + span).min(vectors), o);
        }
    });
    out
}

/// Splits the padded rows of one input plane (`h x w`, padding `r / 2`) into their `m` phases:
/// row `y` of `dst` is `[phase 0 | .. | phase m - 1]`, each `phase_len` long, phase `p` holding the
/// padded columns `m i + p`, zero outside the image.
#[inline(always)]
unsafe fn split_rows<S: Simd>(t: &Tiles, g: &Geometry, src: &[f32], dst: &mut [f32]) {
    let (lanes, pad, m) = (S::LANES, t.r / 2, t.m);
    let stride = t.stride();
    dst[..pad * stride].fill(0.0);
    dst[(g.h + pad) * stride..].fill(0.0);
    // Padded column j holds row[j - pad]: the row's values `m i + q` go to phase
    // `(q + pad) % m` from index `(q + pad) / m`.
    // (Computed once: with `m` unknown to the compiler, each `%` and `/` is a division.)
    let mut at = [0usize; 4];
    for (q, a) in at.iter_mut().enumerate().take(m) {
        *a = (q + pad) % m * t.phase_len + (q + pad) / m;
    }
    let mut tail = [0f32; 32];
    for (y, row) in src.chunks_exact(g.w).enumerate() {
        let r = &mut dst[(y + pad) * stride..(y + pad + 1) * stride];
        // The left padding and what the pieces below leave after the row (at most 1 and 2
        // values per phase: the pieces write `twv` values from index 0 or 1) as one zero
        // vector at each end of each phase, which the pieces then overwrite where they reach
        // (`fill` called `memset` for these few values, eight times a row).
        debug_assert!(g.w.div_ceil(m * lanes) * lanes == t.twv && t.phase_len >= lanes);
        for p in 0..m {
            let part = &mut r[p * t.phase_len..(p + 1) * t.phase_len];
            unsafe {
                S::store(part.as_mut_ptr(), S::zero());
                S::store(part.as_mut_ptr().add(t.phase_len - lanes), S::zero());
            }
        }
        // Each piece of `m * LANES` row values gives LANES of each phase; the last piece is
        // completed with zeros (the right padding), and its lanes end at `twv + 1 <= phase_len`.
        for (k, piece) in row.chunks(m * lanes).enumerate() {
            let p = if piece.len() == m * lanes {
                piece.as_ptr()
            } else {
                tail[..piece.len()].copy_from_slice(piece);
                tail[piece.len()..m * lanes].fill(0.0);
                tail.as_ptr()
            };
            let base = r.as_mut_ptr();
            unsafe {
                let (e, o) = S::unzip(S::load(p), S::load(p.add(lanes)));
                if m == 2 {
                    S::store(base.add(at[0] + k * lanes), e);
                    S::store(base.add(at[1] + k * lanes), o);
                } else {
                    let (e1, o1) = S::unzip(S::load(p.add(2 * lanes)), S::load(p.add(3 * lanes)));
                    let (q0, q2) = S::unzip(e, e1);
                    let (q1, q3) = S::unzip(o, o1);
                    for (q, v) in [q0, q1, q2, q3].into_iter().enumerate() {
                        S::store(base.add(at[q] + k * lanes), v);
                    }
                }
            }
        }
    }
}

/// `B^T d B` for every tile and input channel of one image (`x`: `[cin, h, w]`) into `v`
/// (`[tile vector][element][cin][LANES]`).
#[inline(always)]
unsafe fn input_transform<S: Simd>(
    t: &Tiles,
    g: &Geometry,
    x: &[f32],
    rows: &mut [f32],
    v: &mut [f32],
) {
    let (phase_len, cin, lanes, m) = (t.phase_len, g.cin, S::LANES, t.m);
    debug_assert_eq!(LANES, lanes);
    let (stride, split) = (t.stride(), t.rows() * t.stride());
    for (plane, r) in x.chunks_exact(g.h * g.w).zip(rows.chunks_exact_mut(split)) {
        unsafe { split_rows::<S>(t, g, plane, r) };
    }
    // Column m tx + j of a split row: phase j % m, shifted by j / m.
    let mut cols = [0usize; 6];
    for (j, c) in cols.iter_mut().enumerate() {
        *c = (j % m) * phase_len + j / m;
    }
    // Plain loops and `inline(always)` functions only: a closure may be compiled without the
    // caller's target features, and then every intrinsic in it becomes a call.
    for ty in 0..t.th {
        for tx in (0..t.twv).step_by(lanes) {
            // SAFETY: tile vector (ty * twv + tx) / LANES lies inside `v`; channel `c`'s rows
            // m ty .. m ty + alpha and columns m tx .. m tx + alpha inside `rows`. Channels
            // innermost, so each element's run of channels is written front to back.
            unsafe {
                let dst = v.as_mut_ptr().add((ty * t.twv + tx) * cin * t.elements());
                for c in 0..cin {
                    let r0 = rows.as_ptr().add(c * split + m * ty * stride + tx);
                    let dc = dst.add(c * lanes);
                    if t.alpha() == 4 {
                        input_tile::<S, 4>(r0, stride, &cols, dc, cin * lanes);
                    } else {
                        input_tile::<S, 6>(r0, stride, &cols, dc, cin * lanes);
                    }
                }
            }
        }
    }
}

/// `B^T d B` of one vector of tiles of one channel: `d` rows `r0 + r * stride` at `cols`,
/// element `(i, j)` stored at `dc + (i * A + j) * elem`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // iterating the arrays by value moved them with `memmove`
unsafe fn input_tile<S: Simd, const A: usize>(
    r0: *const f32,
    stride: usize,
    cols: &[usize; 6],
    dc: *mut f32,
    elem: usize,
) {
    unsafe {
        let mut t = [[S::zero(); A]; A];
        for (j, &off) in cols.iter().take(A).enumerate() {
            let mut d = [S::zero(); A];
            for (r, v) in d.iter_mut().enumerate() {
                *v = S::load(r0.add(r * stride + off));
            }
            let b = bt::<S, A>(d);
            for i in 0..A {
                t[i][j] = b[i];
            }
        }
        for i in 0..A {
            let b = bt::<S, A>(t[i]);
            for j in 0..A {
                S::store(dc.add((i * A + j) * elem), b[j]);
            }
        }
    }
}

/// `B^T d` of F(2, 3) (`A` = 4), or of F(2, 5) and F(4, 3) (`A` = 6: the same matrix).
#[inline(always)]
unsafe fn bt<S: Simd, const A: usize>(d: [S::V; A]) -> [S::V; A] {
    let mut out = [unsafe { S::zero() }; A];
    unsafe {
        if A == 4 {
            let b = bt3::<S>([d[0], d[1], d[2], d[3]]);
            out[..4].copy_from_slice(&b);
        } else {
            let b = bt5::<S>([d[0], d[1], d[2], d[3], d[4 % A], d[5 % A]]);
            out.copy_from_slice(&b[..A]);
        }
    }
    out
}

/// `B^T d` of F(2, 3).
#[inline(always)]
unsafe fn bt3<S: Simd>(d: [S::V; 4]) -> [S::V; 4] {
    unsafe {
        [
            S::sub(d[0], d[2]),
            S::add(d[1], d[2]),
            S::sub(d[2], d[1]),
            S::sub(d[1], d[3]),
        ]
    }
}

/// `B^T d` of F(2, 5) and F(4, 3): rows `[4, 0, -5, 0, 1, 0]`, `[0, -4, -4, 1, 1, 0]`,
/// `[0, 4, -4, -1, 1, 0]`, `[0, -2, -1, 2, 1, 0]`, `[0, 2, -1, -2, 1, 0]`, `[0, 4, 0, -5, 0, 1]`.
#[inline(always)]
unsafe fn bt5<S: Simd>(d: [S::V; 6]) -> [S::V; 6] {
    unsafe {
        let (d4_d2, d4_d3) = (S::sub(d[4], d[2]), S::sub(d[4], d[3]));
        let (d1_d3, d1_d2) = (S::sub(d[1], d[3]), S::sub(d[1], d[2]));
        [
            S::fma(S::splat(4.0), d[0], S::fma(S::splat(-5.0), d[2], d[4])),
            S::fma(S::splat(-4.0), S::add(d[1], d[2]), S::add(d[3], d[4])),
            S::fma(S::splat(4.0), d1_d2, d4_d3),
            S::fma(S::splat(-2.0), d1_d3, d4_d2),
            S::fma(S::splat(2.0), d1_d3, d4_d2),
            S::fma(S::splat(4.0), d[1], S::fma(S::splat(-5.0), d[3], d[5])),
        ]
    }
}

/// Where the products' outputs go: tile vectors `0..vectors` belong to the image at `ptr`
/// (`[cout, ho, wo]`), the next `vectors` to the image `stride` floats further, and so on
/// (several images' transformed inputs are consecutive, so a register tile may take vectors of
/// two images and a plane's odd vector count leaves no remainder).
#[derive(Clone, Copy)]
struct Outputs {
    ptr: *mut f32,
    vectors: usize,
    stride: usize,
}

/// Channels `c0..c0 + n` (`n` from [`Isa::channel_blocks`]) of tile vectors `v0..v1` of one
/// image or of consecutive images: the element-wise products summed over input channels, then
/// `A^T M A`, bias and PReLU, stored through `out`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn multiply<S: Simd>(
    t: &Tiles,
    g: &Geometry,
    v: &[f32],
    params: Params,
    c0: usize,
    n: usize,
    v0: usize,
    v1: usize,
    out: Outputs,
) {
    unsafe {
        match (t.alpha(), t.m) {
            (4, _) => multiply_block::<S, 4, 16, 2>(t, g, v, params, c0, n, v0, v1, out),
            (_, 4) => multiply_block::<S, 6, 36, 4>(t, g, v, params, c0, n, v0, v1, out),
            _ => multiply_block::<S, 6, 36, 2>(t, g, v, params, c0, n, v0, v1, out),
        }
    }
}

/// [`multiply`] for one tile size (`A x A` transformed, `E = A * A` elements, `M x M`
/// outputs), with the register tile (channels x vectors) of `forward_block` for `n` channels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn multiply_block<S: Simd, const A: usize, const E: usize, const M: usize>(
    t: &Tiles,
    g: &Geometry,
    v: &[f32],
    params: Params,
    c0: usize,
    n: usize,
    v0: usize,
    v1: usize,
    out: Outputs,
) {
    unsafe {
        match n {
            8 => multiply_tile::<S, A, E, M, 8, 3>(t, g, v, params, c0, v0, v1, out),
            6 => multiply_tile::<S, A, E, M, 6, 2>(t, g, v, params, c0, v0, v1, out),
            4 => multiply_tile::<S, A, E, M, 4, 2>(t, g, v, params, c0, v0, v1, out),
            2 => multiply_tile::<S, A, E, M, 2, 4>(t, g, v, params, c0, v0, v1, out),
            _ => multiply_tile::<S, A, E, M, 1, 8>(t, g, v, params, c0, v0, v1, out),
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn multiply_tile<
    S: Simd,
    const A: usize,
    const E: usize,
    const M: usize,
    const CB: usize,
    const PV: usize,
>(
    t: &Tiles,
    g: &Geometry,
    v: &[f32],
    params: Params,
    c0: usize,
    v0: usize,
    v1: usize,
    out: Outputs,
) {
    let (cin, lanes) = (g.cin, S::LANES);
    let per = cin * E * lanes;
    let (ho, wo) = (g.ho(), g.wo());
    let u = &params.weight[E * c0 * cin..E * (c0 + CB) * cin];
    // The sums `[element][channel][vector]`, every one written before it is read; kept as
    // uninitialised memory and moved vector by vector (zeroing or copying these arrays whole
    // became `memset` and `memcpy` calls).
    let mut sums = std::mem::MaybeUninit::<[[[S::V; PV]; CB]; E]>::uninit();
    let m = sums.as_mut_ptr() as *mut S::V;
    let mut vi = v0;
    while vi < v1 {
        let pv = (v1 - vi).min(PV);
        if pv < PV {
            // The last vectors one at a time rather than with copies of the last one (a 14x14
            // plane has 7 vectors of tiles: with pairs, an eighth of the products were copies).
            unsafe { multiply_tile::<S, A, E, M, CB, 1>(t, g, v, params, c0, vi, v1, out) };
            return;
        }
        unsafe {
            // A tile narrower than PV at the end repeats its last vector (never stored).
            let vp: [*const f32; PV] =
                std::array::from_fn(|p| v.as_ptr().add((vi + p.min(pv - 1)) * per));
            for e in 0..E {
                let mut acc = [[S::zero(); PV]; CB];
                let ue = u.as_ptr().add(e * cin * CB);
                for c in 0..cin {
                    let off = (e * cin + c) * lanes;
                    let mut xv = [S::zero(); PV];
                    for (x, p) in xv.iter_mut().zip(&vp) {
                        *x = S::load(p.add(off));
                    }
                    for (j, row) in acc.iter_mut().enumerate() {
                        let w = S::splat(*ue.add(c * CB + j));
                        for p in 0..PV {
                            row[p] = S::fma(xv[p], w, row[p]);
                        }
                    }
                }
                for j in 0..CB {
                    for p in 0..PV {
                        m.add((e * CB + j) * PV + p).write(acc[j][p]);
                    }
                }
            }
            for p in 0..pv {
                // Image, tile row and first output column of this vector (a few divisions per
                // vector).
                let (img, local) = ((vi + p) / out.vectors, (vi + p) % out.vectors);
                let out = out.ptr.add(img * out.stride);
                let q = local * lanes;
                let (ty, col) = (q / t.twv, M * (q % t.twv));
                if col >= wo {
                    continue;
                }
                let valid = wo - col;
                for j in 0..CB {
                    let ch = c0 + j;
                    let mut rows = output_tile::<S, A, M>(m.add(j * PV + p), CB * PV);
                    if let Some(b) = params.bias {
                        let b = S::splat(b[ch]);
                        for a in rows.iter_mut().flatten() {
                            *a = S::add(*a, b);
                        }
                    }
                    if let Some(k) = params.prelu {
                        let k = S::splat(k[ch]);
                        for a in rows.iter_mut().flatten() {
                            *a = S::fma(S::min0(*a), k, S::max0(*a));
                        }
                    }
                    for r in 0..M {
                        let y = M * ty + r;
                        if y >= ho {
                            break;
                        }
                        // The tiles' columns interleaved into `M` vectors of output columns.
                        let row = interleave::<S, M>(rows[r]);
                        let dst = out.add((ch * ho + y) * wo + col);
                        for i in 0..M {
                            if valid > i * lanes {
                                let n = (valid - i * lanes).min(lanes);
                                S::store_lanes(dst.add(i * lanes), row[i], 0, n);
                            }
                        }
                    }
                }
            }
        }
        vi += pv;
    }
}

/// `A^T z` of F(2, 3) for a column of 4: `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`.
#[inline(always)]
unsafe fn at3<S: Simd>(z: [S::V; 4]) -> [S::V; 2] {
    unsafe {
        [
            S::add(S::add(z[0], z[1]), z[2]),
            S::sub(S::sub(z[1], z[2]), z[3]),
        ]
    }
}

/// `A^T z` of F(2, 5) for a column of 6: `A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]]`.
#[inline(always)]
unsafe fn at5<S: Simd>(z: [S::V; 6]) -> [S::V; 2] {
    unsafe {
        [
            S::add(S::add(S::add(z[0], z[1]), S::add(z[2], z[3])), z[4]),
            S::fma(
                S::splat(2.0),
                S::sub(z[3], z[4]),
                S::add(S::sub(z[1], z[2]), z[5]),
            ),
        ]
    }
}

/// `A^T z` of F(4, 3) for a column of 6: `A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0],
/// [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]`.
#[inline(always)]
unsafe fn at43<S: Simd>(z: [S::V; 6]) -> [S::V; 4] {
    unsafe {
        let (s12, d12) = (S::add(z[1], z[2]), S::sub(z[1], z[2]));
        let (s34, d34) = (S::add(z[3], z[4]), S::sub(z[3], z[4]));
        [
            S::add(S::add(z[0], s12), s34),
            S::fma(S::splat(2.0), d34, d12),
            S::fma(S::splat(4.0), s34, s12),
            S::fma(S::splat(8.0), d34, S::add(d12, z[5])),
        ]
    }
}

/// `A^T z` for a column of `A` (4 or 6) into `M` (2 or 4) outputs.
#[inline(always)]
unsafe fn at<S: Simd, const A: usize, const M: usize>(z: [S::V; A]) -> [S::V; M] {
    let mut out = [unsafe { S::zero() }; M];
    unsafe {
        if A == 4 {
            out[..2].copy_from_slice(&at3::<S>([z[0], z[1], z[2], z[3]]));
        } else if M == 2 {
            out[..2].copy_from_slice(&at5::<S>([z[0], z[1], z[2], z[3], z[4 % A], z[5 % A]]));
        } else {
            let y = at43::<S>([z[0], z[1], z[2], z[3], z[4 % A], z[5 % A]]);
            out.copy_from_slice(&y[..M]);
        }
    }
    out
}

/// `A^T M A` of one tile, `M` the `A x A` elements, element `(i, x)` at `m + (i A + x) stride`:
/// `M x M` outputs, over rows then columns.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // as in `input_tile`
unsafe fn output_tile<S: Simd, const A: usize, const M: usize>(
    m: *const S::V,
    stride: usize,
) -> [[S::V; M]; M] {
    unsafe {
        let mut rows = [[S::zero(); A]; M];
        for x in 0..A {
            let mut z = [S::zero(); A];
            for i in 0..A {
                z[i] = *m.add((i * A + x) * stride);
            }
            let y = at::<S, A, M>(z);
            for i in 0..M {
                rows[i][x] = y[i];
            }
        }
        let mut out = [[S::zero(); M]; M];
        for i in 0..M {
            out[i] = at::<S, A, M>(rows[i]);
        }
        out
    }
}

/// Column `j` of `LANES` side-by-side tiles (`cols[j]`) interleaved into the `M x LANES`
/// output columns they cover, in order.
#[inline(always)]
unsafe fn interleave<S: Simd, const M: usize>(cols: [S::V; M]) -> [S::V; M] {
    let mut out = [unsafe { S::zero() }; M];
    unsafe {
        if M == 2 {
            let (lo, hi) = S::zip(cols[0], cols[1]);
            out[0] = lo;
            out[1] = hi;
        } else {
            // Columns 0 and 2, 1 and 3, then those pairs: 0 1 2 3 of each tile in turn.
            let (a_lo, a_hi) = S::zip(cols[0], cols[2 % M]);
            let (b_lo, b_hi) = S::zip(cols[1], cols[3 % M]);
            let (o0, o1) = S::zip(a_lo, b_lo);
            let (o2, o3) = S::zip(a_hi, b_hi);
            out.copy_from_slice(&[o0, o1, o2, o3][..M]);
        }
    }
    out
}

/// Whether [`weight_grad`] computes this convolution's weight gradient: where [`applies`]
/// holds, for 3x3 kernels with at least 8 input channels (the transforms and the channels-last
/// copies are paid per channel: 4 -> 16 at 28x28 ran at half the direct kernel's speed, 16 ->
/// 16 1.44x faster, 32 -> 32 at 14x14 1.72x). F(2x2, 5x5) is left to the direct kernel: its
/// weight gradient sums
/// products of transformed values (up to 5x the inputs) over every tile before `G^T` divides by
/// up to 24, and in a trial came out 50 times further from the exact sum than the direct
/// kernel's (1.4e-6 against 3e-8 of the terms' magnitudes, on the Madry network's 32 -> 64
/// layer), where F(2x2, 3x3) is as close as the direct kernel.
pub(super) fn weight_applies(isa: Isa, g: &Geometry) -> bool {
    g.k == 3 && g.cin >= 8 && applies(isa, g)
}

/// Gradient of the convolution with respect to its weight (`[cout, cin, 3, 3]`) for shapes
/// where [`weight_applies`] holds. Each 2x2 output tile is `A^T M A` with `M` the sum over
/// input channels of `U . V` and `U = G g G^T`, so the gradient of `U` is the sum over tiles
/// of `(A dY A^T) . V`, and that of `g` is `G^T dU G`: 16 multiplications per tile and channel
/// pair where the direct kernel does 36.
///
/// Unlike the forward pass, channels sit in the vector lanes here: each image is copied
/// channels-last and zero-padded ([`WeightShape`]), every tile is transformed from there, and
/// the sums over tiles are then the forward kernel's register tile (output channels broadcast,
/// input channels in lanes) with no horizontal sums and no junk tiles.
pub(super) fn weight_grad(isa: Isa, g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(weight_applies(isa, g), "winograd: weight gradient shape");
    let s = WeightShape::new(g);
    let (xn, dn) = (g.cin * g.h * g.w, g.cout * g.ho() * g.wo());
    let blocks = super::channel_blocks(isa, g.cout);
    let du = super::sum_over_chunks(g.batch, 16 * g.cout * s.cinp, |b0, b1, acc| {
        let mut buffers = WeightBuffers::new(&s);
        for b in b0..b1 {
            let (xi, di) = (&x[b * xn..(b + 1) * xn], &dy[b * dn..(b + 1) * dn]);
            // SAFETY: the buffers are `s`'s sizes (`WeightBuffers::new`), `acc` holds
            // 16 x cout x cinp sums.
            unsafe { dispatch_weight_image(isa, &s, g, xi, di, &blocks, &mut buffers, acc) };
        }
    });
    untransform(g, &s, &du)
}

/// The geometry of [`weight_grad`]'s channels-last copies: the input `[hp][wp][cinp]` with a
/// one-pixel ring of zeros (tile `(ty, tx)` reads its rows and columns `2ty .. 2ty + 4`,
/// `2tx .. 2tx + 4`), the output gradient `[2 th][2 tw][coutp]`, channels rounded up to whole
/// vectors with zeros; and the transformed tiles `[element][tile][channel]`, each element's run
/// a cache line longer than its data so that the transforms' 16 store streams never sit a
/// multiple of 4 KiB apart (the same cache set).
struct WeightShape {
    /// The tile grid (`th x tw` tiles; its lane rounding is not used here).
    grid: Tiles,
    tiles: usize,
    cinp: usize,
    coutp: usize,
    wp: usize,
    /// Lengths of the input and output-gradient copies.
    xlen: usize,
    dlen: usize,
    /// Distance between elements in the transformed input and output gradient.
    vrun: usize,
    drun: usize,
}

impl WeightShape {
    fn new(g: &Geometry) -> WeightShape {
        let grid = Tiles::sized(g, 2);
        let (th, tw) = (grid.th, grid.tw);
        let (cinp, coutp) = (
            g.cin.div_ceil(LANES) * LANES,
            g.cout.div_ceil(LANES) * LANES,
        );
        let tiles = th * tw;
        let wp = 2 * tw + 2;
        WeightShape {
            grid,
            tiles,
            cinp,
            coutp,
            wp,
            xlen: (2 * th + 2) * wp * cinp,
            dlen: 2 * th * 2 * tw * coutp,
            vrun: tiles * cinp + 16,
            drun: tiles * coutp + 16,
        }
    }
}

/// A task's scratch for [`weight_grad`]: one image's channels-last copies and transforms.
struct WeightBuffers {
    x: Vec<f32>,
    dy: Vec<f32>,
    v: Vec<f32>,
    d: Vec<f32>,
}

impl WeightBuffers {
    fn new(s: &WeightShape) -> WeightBuffers {
        // The copies are rewritten whole by `channels_last`; of the transforms, every element
        // of every tile and channel is written before the products read it (not the padding
        // after each run, which nothing reads).
        WeightBuffers {
            x: uninit(s.xlen),
            dy: uninit(s.dlen),
            v: uninit(16 * s.vrun),
            d: uninit(16 * s.drun),
        }
    }
}

/// `src` (`[c][h][w]`) into `dst` (`[rows][cols][cp]`, rows `cols * cp` long) at row and column
/// `pad`; zero everywhere else. Blocks of 8 channels x 8 pixels are transposed in registers.
#[inline(always)]
unsafe fn channels_last<S: Simd>(
    src: &[f32],
    (c, h, w): (usize, usize, usize),
    dst: &mut [f32],
    (cols, cp): (usize, usize),
    pad: usize,
) {
    assert!(
        src.len() >= c * h * w
            && dst.len() >= ((h + pad) * cols) * cp
            && cols >= w + pad
            && cp >= c,
        "winograd: channels-last copy"
    );
    dst.fill(0.0);
    let (groups, runs) = (c / LANES * LANES, w / LANES * LANES);
    for cv in (0..groups).step_by(LANES) {
        for y in 0..h {
            let at = (y + pad) * cols + pad;
            // SAFETY: rows cv .. cv + 8 of plane row y, columns x .. x + 8 <= w, lie in
            // `src`; pixels at + x + i < (h + pad) * cols, channels cv + 8 <= cp in `dst`.
            unsafe {
                for x in (0..runs).step_by(LANES) {
                    let mut r = [S::zero(); LANES];
                    for (i, v) in r.iter_mut().enumerate() {
                        *v = S::load(src.as_ptr().add(((cv + i) * h + y) * w + x));
                    }
                    for (i, v) in transpose8::<S>(r).into_iter().enumerate() {
                        S::store(dst.as_mut_ptr().add((at + x + i) * cp + cv), v);
                    }
                }
            }
            for x in runs..w {
                for i in 0..LANES {
                    dst[(at + x) * cp + cv + i] = src[((cv + i) * h + y) * w + x];
                }
            }
        }
    }
    for ch in groups..c {
        for y in 0..h {
            let row = &src[(ch * h + y) * w..][..w];
            let at = ((y + pad) * cols + pad) * cp + ch;
            for (d, v) in dst[at..].iter_mut().step_by(cp).zip(row) {
                *d = *v;
            }
        }
    }
}

/// Transposes 8 vectors of 8 lanes: three rounds of interleaving row `i` with row `i + 4`.
#[inline(always)]
unsafe fn transpose8<S: Simd>(mut r: [S::V; LANES]) -> [S::V; LANES] {
    for _ in 0..3 {
        let mut out = r;
        for i in 0..LANES / 2 {
            let (lo, hi) = unsafe { S::zip(r[i], r[i + LANES / 2]) };
            out[2 * i] = lo;
            out[2 * i + 1] = hi;
        }
        r = out;
    }
    r
}

/// Adds the gradient of the transformed weights from one image (`xi`: `[cin, h, w]`, `di`:
/// `[cout, ho, wo]`) to `acc` (`[element][cout][cinp]`): copies it channels-last into
/// `buffers`, transforms every tile, then sums over tiles in register blocks of output channels
/// (`blocks`, broadcast) x one or two vectors of input channels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_image<S: Simd>(
    s: &WeightShape,
    g: &Geometry,
    xi: &[f32],
    di: &[f32],
    blocks: &[(usize, usize)],
    buffers: &mut WeightBuffers,
    acc: &mut [f32],
) {
    let lanes = S::LANES;
    debug_assert_eq!(LANES, lanes);
    let WeightBuffers { x, dy, v, d } = buffers;
    unsafe {
        channels_last::<S>(xi, (g.cin, g.h, g.w), x, (s.wp, s.cinp), 1);
        channels_last::<S>(
            di,
            (g.cout, g.ho(), g.wo()),
            dy,
            (2 * s.grid.tw, s.coutp),
            0,
        );
    }
    let (cinp, coutp, wp, dw) = (s.cinp, s.coutp, s.wp, 2 * s.grid.tw);
    assert!(
        x.len() >= s.xlen && dy.len() >= s.dlen && v.len() >= 16 * s.vrun && d.len() >= 16 * s.drun,
        "winograd: weight gradient buffers"
    );
    assert!(
        acc.len() >= 16 * g.cout * cinp,
        "winograd: weight gradient sums"
    );
    let cols = [0, cinp, 2 * cinp, 3 * cinp, 0, 0];
    // SAFETY (transforms): tile (ty, tx) reads input rows 2ty .. 2ty + 4 < 2 th + 2 and columns
    // 2tx .. 2tx + 4 <= wp, gradient rows 2ty + 1 < 2 th and columns 2tx + 1 < 2 tw, channel
    // vectors below the rounded channel counts; it writes element e's entry `tile` of a run.
    unsafe {
        for ty in 0..s.grid.th {
            for tx in 0..s.grid.tw {
                let tile = ty * s.grid.tw + tx;
                for cv in (0..cinp).step_by(lanes) {
                    // Channels-last: rows `wp * cinp` apart, columns `cinp` apart.
                    let p = x.as_ptr().add((2 * ty * wp + 2 * tx) * cinp + cv);
                    let out = v.as_mut_ptr().add(tile * cinp + cv);
                    input_tile::<S, 4>(p, wp * cinp, &cols, out, s.vrun);
                }
                for cv in (0..coutp).step_by(lanes) {
                    let p = dy.as_ptr().add((2 * ty * dw + 2 * tx) * coutp + cv);
                    let top = [S::load(p), S::load(p.add(coutp))];
                    let q = p.add(dw * coutp);
                    let bottom = [S::load(q), S::load(q.add(coutp))];
                    grad_tile::<S>(top, bottom, d.as_mut_ptr().add(tile * coutp + cv), s.drun);
                }
            }
        }
    }
    for e in 0..16 {
        // SAFETY: element e's runs lie inside `v` and `d`, its sums inside `acc` (asserted).
        unsafe {
            let (ve, de) = (v.as_ptr().add(e * s.vrun), d.as_ptr().add(e * s.drun));
            let ae = acc.as_mut_ptr().add(e * g.cout * cinp);
            for &(co, n) in blocks {
                let mut ci = 0;
                while ci < cinp {
                    let two = cinp - ci >= 2 * lanes;
                    let at = Sums {
                        v: ve.add(ci),
                        d: de.add(co),
                        out: ae.add(co * cinp + ci),
                        tiles: s.tiles,
                        strides: (cinp, coutp),
                    };
                    match (n, two) {
                        (8, true) => weight_tile::<S, 8, 2>(&at),
                        (8, false) => weight_tile::<S, 8, 1>(&at),
                        (6, true) => weight_tile::<S, 6, 2>(&at),
                        (6, false) => weight_tile::<S, 6, 1>(&at),
                        (4, true) => weight_tile::<S, 4, 2>(&at),
                        (4, false) => weight_tile::<S, 4, 1>(&at),
                        (2, true) => weight_tile::<S, 2, 2>(&at),
                        (2, false) => weight_tile::<S, 2, 1>(&at),
                        (_, true) => weight_tile::<S, 1, 2>(&at),
                        (_, false) => weight_tile::<S, 1, 1>(&at),
                    }
                    ci += if two { 2 * lanes } else { lanes };
                }
            }
        }
    }
}

/// `A y A^T` of one vector of 2x2 output-gradient tiles (rows `top`, `bottom`), element
/// `(i, j)` stored at `dc + (i * 4 + j) * elem`.
#[inline(always)]
unsafe fn grad_tile<S: Simd>(top: [S::V; 2], bottom: [S::V; 2], dc: *mut f32, elem: usize) {
    unsafe {
        let (r0, r1) = (
            a_pair::<S>(top[0], top[1]),
            a_pair::<S>(bottom[0], bottom[1]),
        );
        for j in 0..4 {
            for (i, val) in a_pair::<S>(r0[j], r1[j]).into_iter().enumerate() {
                S::store(dc.add((i * 4 + j) * elem), val);
            }
        }
    }
}

/// `A z` of F(2, 3) for a pair: the rows of `A` (the transpose of `A^T` in [`at3`]) are
/// `(1, 0), (1, 1), (1, -1), (0, -1)`.
#[inline(always)]
unsafe fn a_pair<S: Simd>(z0: S::V, z1: S::V) -> [S::V; 4] {
    unsafe { [z0, S::add(z0, z1), S::sub(z0, z1), S::sub(S::zero(), z1)] }
}

/// One register block of [`weight_image`]'s sums for one element: input channels at `v`
/// (tiles `strides.0` apart), output channels at `d` (`strides.1` apart), the block's sums at
/// `out` (output channel rows `strides.0` apart).
struct Sums {
    v: *const f32,
    d: *const f32,
    out: *mut f32,
    tiles: usize,
    strides: (usize, usize),
}

/// `CO` output channels x `CV` vectors of input channels of [`Sums`], over all tiles.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // the accumulators are indexed by both channels
unsafe fn weight_tile<S: Simd, const CO: usize, const CV: usize>(at: &Sums) {
    let (vs, ds) = at.strides;
    let lanes = S::LANES;
    unsafe {
        let mut a = [[S::zero(); CV]; CO];
        for j in 0..CO {
            for p in 0..CV {
                a[j][p] = S::load(at.out.add(j * vs + p * lanes));
            }
        }
        for tile in 0..at.tiles {
            let (vp, dp) = (at.v.add(tile * vs), at.d.add(tile * ds));
            let mut xv = [S::zero(); CV];
            for p in 0..CV {
                xv[p] = S::load(vp.add(p * lanes));
            }
            for j in 0..CO {
                let w = S::splat(*dp.add(j));
                for p in 0..CV {
                    a[j][p] = S::fma(xv[p], w, a[j][p]);
                }
            }
        }
        for j in 0..CO {
            for p in 0..CV {
                S::store(at.out.add(j * vs + p * lanes), a[j][p]);
            }
        }
    }
}

/// `G^T dU G` per output and input channel: the weight gradient (`[cout, cin, 3, 3]`) from
/// that of the transformed weights (`du`: `[element][cout][cinp]`).
fn untransform(g: &Geometry, s: &WeightShape, du: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; g.cout * g.cin * 9];
    for (pair, dw) in out.chunks_exact_mut(9).enumerate() {
        let (co, ci) = (pair / g.cin, pair % g.cin);
        let at = |e: usize| du[(e * g.cout + co) * s.cinp + ci];
        let mut left = [[0f32; 4]; 3];
        for (k, row) in left.iter_mut().enumerate() {
            for (b, v) in row.iter_mut().enumerate() {
                for (a, gr) in G3.iter().enumerate() {
                    *v += gr[k] * at(a * 4 + b);
                }
            }
        }
        for k in 0..3 {
            for l in 0..3 {
                dw[k * 3 + l] = (0..4).map(|b| left[k][b] * G3[b][l]).sum();
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
unsafe fn dispatch_weight_image(
    isa: Isa,
    s: &WeightShape,
    g: &Geometry,
    xi: &[f32],
    di: &[f32],
    blocks: &[(usize, usize)],
    buffers: &mut WeightBuffers,
    acc: &mut [f32],
) {
    // SAFETY: as in `dispatch_input`.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::weight_image_avx2(s, g, xi, di, blocks, buffers, acc),
            _ => weight_image::<Portable>(s, g, xi, di, blocks, buffers, acc),
        }
    }
}

unsafe fn dispatch_input(
    isa: Isa,
    t: &Tiles,
    g: &Geometry,
    x: &[f32],
    rows: &mut [f32],
    v: &mut [f32],
) {
    // SAFETY: `isa` comes from `Isa::available`, so the CPU has its instructions.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::input_avx2(t, g, x, rows, v),
            // Not taken with AVX-512 (see `applies`).
            _ => input_transform::<Portable>(t, g, x, rows, v),
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn dispatch_multiply(
    isa: Isa,
    t: &Tiles,
    g: &Geometry,
    v: &[f32],
    params: Params,
    c0: usize,
    n: usize,
    v0: usize,
    v1: usize,
    out: Outputs,
) {
    // SAFETY: as in `dispatch_input`.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::multiply_avx2(t, g, v, params, c0, n, v0, v1, out),
            _ => multiply::<Portable>(t, g, v, params, c0, n, v0, v1, out),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::x86::Avx2;
    use super::{
        Geometry, Outputs, Params, Tiles, WeightBuffers, WeightShape, input_transform, multiply,
        weight_image,
    };

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn input_avx2(
        t: &Tiles,
        g: &Geometry,
        x: &[f32],
        rows: &mut [f32],
        v: &mut [f32],
    ) {
        unsafe { input_transform::<Avx2>(t, g, x, rows, v) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn weight_image_avx2(
        s: &WeightShape,
        g: &Geometry,
        xi: &[f32],
        di: &[f32],
        blocks: &[(usize, usize)],
        buffers: &mut WeightBuffers,
        acc: &mut [f32],
    ) {
        unsafe { weight_image::<Avx2>(s, g, xi, di, blocks, buffers, acc) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn multiply_avx2(
        t: &Tiles,
        g: &Geometry,
        v: &[f32],
        params: Params,
        c0: usize,
        n: usize,
        v0: usize,
        v1: usize,
        out: Outputs,
    ) {
        unsafe { multiply::<Avx2>(t, g, v, params, c0, n, v0, v1, out) }
    }
}
