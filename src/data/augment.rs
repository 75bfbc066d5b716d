//! Seeded training-time augmentation: random shifts, rotations, scalings and elastic
//! distortions (Simard et al., 2003) of the images of a batch.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::ImageSet;
use crate::error::{Error, Result};

/// How training images are perturbed; every draw comes from the seed given to
/// [`Augment::apply`]. The default changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Random shifts of up to this many whole pixels, each axis.
    pub shift: usize,
    /// Random rotations of up to this many degrees either way, about the image centre.
    pub rotate: f32,
    /// Random scalings by a factor in `[1 - scale, 1 + scale]`, about the image centre.
    pub scale: f32,
    /// Elastic distortion strength in pixels (0: none): a random displacement field, uniform in
    /// `[-1, 1]` per pixel and axis, smoothed by a Gaussian of `elastic_sigma` pixels and
    /// multiplied by this.
    pub elastic_alpha: f32,
    /// Smoothness of the elastic field (Gaussian sigma in pixels).
    pub elastic_sigma: f32,
}

impl Augment {
    /// Only whole-pixel shifts (the cheap, exact path).
    pub fn shifts(shift: usize) -> Self {
        Augment {
            shift,
            ..Default::default()
        }
    }

    /// The shipped LeNet's recipe (`models/lenet-mnist.safetensors`, chosen on the validation
    /// digits): shifts of 1 pixel, rotations up to 8 degrees, scalings up to 8%, elastic
    /// distortion alpha 20, sigma 4.
    pub fn lenet_mnist() -> Self {
        Augment {
            shift: 1,
            rotate: 8.0,
            scale: 0.08,
            elastic_alpha: 20.0,
            elastic_sigma: 4.0,
        }
    }

    /// Whether this changes nothing.
    pub(crate) fn is_identity(&self) -> bool {
        self.shift == 0 && self.rotate == 0.0 && self.scale == 0.0 && self.elastic_alpha == 0.0
    }

    fn warps(&self) -> bool {
        self.rotate != 0.0 || self.scale != 0.0 || self.elastic_alpha != 0.0
    }

    /// Rejects settings that are not finite, negative, or that would turn digits inside out.
    pub fn check(&self) -> Result<()> {
        let ok = |v: f32| v.is_finite() && v >= 0.0;
        if !(ok(self.rotate) && ok(self.scale) && ok(self.elastic_alpha) && ok(self.elastic_sigma))
            || self.rotate > 180.0
            || self.scale >= 1.0
            || self.shift > 64
            || (self.elastic_alpha > 0.0 && self.elastic_sigma <= 0.0)
        {
            return Err(Error::Invalid(format!(
                "augmentation needs shift <= 64, rotation in [0, 180] degrees, scale in [0, 1) \
                 and elastic alpha >= 0 with sigma > 0 (got {self:?})"
            )));
        }
        Ok(())
    }

    /// A perturbed copy of `set`, one independent draw per image, seeded.
    pub fn apply(&self, set: &ImageSet, seed: u64) -> ImageSet {
        if self.is_identity() {
            return set.clone();
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let [c, h, w] = set.shape;
        let m = self.shift as i64;
        let mut out = vec![0f32; set.images.len()];
        for (i, dst) in out.chunks_mut(c * h * w).enumerate() {
            // Shifts are drawn first, so a shift-only augmentation draws what it always drew.
            let dy = rng.random_range(-m..=m) as f32;
            let dx = rng.random_range(-m..=m) as f32;
            let src = set.image(i);
            if !self.warps() {
                warp(src, dst, [c, h, w], |y, x| (y - dy, x - dx));
                continue;
            }
            let angle = (self.rotate * rng.random_range(-1f32..=1.0)).to_radians();
            let zoom = 1.0 + self.scale * rng.random_range(-1f32..=1.0);
            let field = (self.elastic_alpha > 0.0).then(|| {
                let mut f = || {
                    let raw: Vec<f32> = (0..h * w).map(|_| rng.random_range(-1f32..=1.0)).collect();
                    let mut s = gaussian_blur(&raw, h, w, self.elastic_sigma);
                    s.iter_mut().for_each(|v| *v *= self.elastic_alpha);
                    s
                };
                (f(), f())
            });
            let turn = angle.sin_cos();
            let centre = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
            warp(src, dst, [c, h, w], |y, x| {
                let (sy, sx) = source_of(y, x, (dy, dx), turn, zoom, centre);
                match &field {
                    Some((fy, fx)) => {
                        let k = y as usize * w + x as usize;
                        (sy + fy[k], sx + fx[k])
                    }
                    None => (sy, sx),
                }
            });
        }
        ImageSet {
            images: out,
            labels: set.labels.clone(),
            shape: set.shape,
            indices: set.indices.clone(),
        }
    }
}

/// Where output pixel `(y, x)` samples its source: undo the shift, then the rotation
/// (`turn` = sine and cosine of the angle) and the zoom about `centre`.
fn source_of(
    y: f32,
    x: f32,
    (dy, dx): (f32, f32),
    (sin, cos): (f32, f32),
    zoom: f32,
    (cy, cx): (f32, f32),
) -> (f32, f32) {
    let (py, px) = (y - dy - cy, x - dx - cx);
    (
        (cos * py - sin * px) / zoom + cy,
        (sin * py + cos * px) / zoom + cx,
    )
}

/// Fills `dst` by sampling `src` bilinearly at `at(y, x)` for every output pixel (zero
/// outside the image).
fn warp(src: &[f32], dst: &mut [f32], [c, h, w]: [usize; 3], at: impl Fn(f32, f32) -> (f32, f32)) {
    let value = |ch: usize, y: i64, x: i64| -> f32 {
        if y < 0 || x < 0 || y >= h as i64 || x >= w as i64 {
            0.0
        } else {
            src[(ch * h + y as usize) * w + x as usize]
        }
    };
    for y in 0..h {
        for x in 0..w {
            let (sy, sx) = at(y as f32, x as f32);
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as i64, x0 as i64);
            for ch in 0..c {
                let top = value(ch, y0, x0) * (1.0 - fx) + value(ch, y0, x0 + 1) * fx;
                let bottom = value(ch, y0 + 1, x0) * (1.0 - fx) + value(ch, y0 + 1, x0 + 1) * fx;
                dst[(ch * h + y) * w + x] = if fy == 0.0 {
                    top
                } else {
                    top * (1.0 - fy) + bottom * fy
                };
            }
        }
    }
}

/// Separable Gaussian blur of an `h x w` plane (borders clamped to the edge).
fn gaussian_blur(v: &[f32], h: usize, w: usize, sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil() as i64;
    let kernel: Vec<f32> = (-r..=r)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
    let pass = |input: &[f32], along_x: bool| -> Vec<f32> {
        let mut out = vec![0f32; h * w];
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                let mut acc = 0f32;
                for (k, d) in kernel.iter().zip(-r..=r) {
                    let (yy, xx) = if along_x {
                        (y, (x + d).clamp(0, w as i64 - 1))
                    } else {
                        ((y + d).clamp(0, h as i64 - 1), x)
                    };
                    acc += k * input[yy as usize * w + xx as usize];
                }
                out[y as usize * w + x as usize] = acc;
            }
        }
        out
    };
    pass(&pass(v, true), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ImageSet {
        crate::data::embedded_mnist().take(8)
    }

    #[test]
    fn identity_and_shifts() {
        let s = set();
        assert_eq!(Augment::default().apply(&s, 1).images, s.images);
        // Whole-pixel shifts move pixels without changing them, and keep the draw sequence.
        let a = Augment::shifts(2).apply(&s, 3);
        let mut rng = StdRng::seed_from_u64(3);
        let [_, h, w] = s.shape;
        for i in 0..s.len() {
            let dy = rng.random_range(-2i64..=2);
            let dx = rng.random_range(-2i64..=2);
            for y in 2..h as i64 - 2 {
                for x in 2..w as i64 - 2 {
                    assert_eq!(
                        a.image(i)[(y * w as i64 + x) as usize],
                        s.image(i)[((y - dy) * w as i64 + x - dx) as usize]
                    );
                }
            }
        }
    }

    #[test]
    fn warps_keep_the_digit_and_are_seeded() {
        let s = set();
        let aug = Augment {
            shift: 1,
            rotate: 12.0,
            scale: 0.1,
            elastic_alpha: 8.0,
            elastic_sigma: 4.0,
        };
        aug.check().unwrap();
        let a = aug.apply(&s, 7);
        assert_eq!(a.images, aug.apply(&s, 7).images);
        assert_ne!(a.images, aug.apply(&s, 8).images);
        for i in 0..s.len() {
            let (ink, ink_a): (f32, f32) = (s.image(i).iter().sum(), a.image(i).iter().sum());
            // Changed, values in range, about as much ink (zoom 1.1 alone adds 21%).
            assert_ne!(s.image(i), a.image(i));
            assert!(a.image(i).iter().all(|v| (0.0..=1.0).contains(v)));
            assert!((ink_a / ink - 1.0).abs() < 0.4, "ink {ink} -> {ink_a}");
        }
        // The geometry: a quarter turn about the centre moves the pixel grid onto itself.
        let (sin, cos) = 90f32.to_radians().sin_cos();
        let (y, x) = source_of(0.0, 3.0, (0.0, 0.0), (sin, cos), 1.0, (13.5, 13.5));
        assert!(
            (y - 24.0).abs() < 1e-4 && (x - 0.0).abs() < 1e-4,
            "({y}, {x})"
        );
        let (y, x) = source_of(5.0, 5.0, (1.0, -2.0), (0.0, 1.0), 2.0, (13.5, 13.5));
        assert!(
            (y - 8.75).abs() < 1e-4 && (x - 10.25).abs() < 1e-4,
            "({y}, {x})"
        );
        let quarter = Augment {
            rotate: 90.0,
            ..Default::default()
        };
        assert!(quarter.check().is_ok());
        assert!(
            Augment {
                scale: 1.5,
                ..Default::default()
            }
            .check()
            .is_err()
        );
        assert!(
            Augment {
                elastic_alpha: 5.0,
                elastic_sigma: 0.0,
                ..Default::default()
            }
            .check()
            .is_err()
        );
    }
}
