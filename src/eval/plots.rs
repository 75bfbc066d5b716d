//! PNG figures without a plotting library: ROC curves, a detection heat-map over denoiser
//! pairs, and a grid of example images. Colours are listed in the report next to each figure.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};

/// Line colours, in the order curves are drawn.
pub const PALETTE: [(&str, [u8; 3]); 8] = [
    ("blue", [31, 119, 180]),
    ("orange", [255, 127, 14]),
    ("green", [44, 160, 44]),
    ("red", [214, 39, 40]),
    ("purple", [148, 103, 189]),
    ("brown", [140, 86, 75]),
    ("pink", [227, 119, 194]),
    ("grey", [127, 127, 127]),
];

fn save(img: &RgbImage, path: &Path) -> Result<()> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| Error::format(path, format!("cannot encode PNG: {e}")))?;
    crate::util::write_atomic(path, &buf.into_inner())
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3], width: i64) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) * 2.0).ceil().max(1.0) as usize;
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        for dx in -width / 2..=width / 2 {
            for dy in -width / 2..=width / 2 {
                let (px, py) = (x.round() as i64 + dx, y.round() as i64 + dy);
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    img.put_pixel(px as u32, py as u32, Rgb(c));
                }
            }
        }
    }
}

/// ROC curves (false-positive rate across, true-positive rate up), one colour per curve in
/// [`PALETTE`] order, with the chance diagonal in light grey.
pub fn roc_png(curves: &[(String, Vec<(f64, f64)>)], path: &Path) -> Result<()> {
    let (w, m) = (420u32, 30.0f64);
    let mut img = RgbImage::from_pixel(w, w, Rgb([255, 255, 255]));
    let span = w as f64 - 2.0 * m;
    let to = |(x, y): (f64, f64)| (m + x * span, w as f64 - m - y * span);
    line(&mut img, to((0.0, 0.0)), to((1.0, 1.0)), [210, 210, 210], 1);
    for (a, b) in [
        ((0.0, 0.0), (1.0, 0.0)),
        ((0.0, 0.0), (0.0, 1.0)),
        ((1.0, 0.0), (1.0, 1.0)),
        ((0.0, 1.0), (1.0, 1.0)),
    ] {
        line(&mut img, to(a), to(b), [0, 0, 0], 1);
    }
    for (i, (_, pts)) in curves.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()].1;
        for win in pts.windows(2) {
            line(&mut img, to(win[0]), to(win[1]), c, 2);
        }
    }
    save(&img, path)
}

fn colour(v: f64) -> [u8; 3] {
    // Dark blue (0) to yellow (1).
    let v = v.clamp(0.0, 1.0);
    let stops = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let x = v * 4.0;
    let i = (x.floor() as usize).min(3);
    let t = x - i as f64;
    let c = |k: usize| (stops[i][k] * (1.0 - t) + stops[i + 1][k] * t) as u8;
    [c(0), c(1), c(2)]
}

/// A heat-map of values in `[0, 1]` (`None` cells stay white), dark blue for 0 to yellow for 1.
pub fn heatmap_png(values: &[Vec<Option<f64>>], path: &Path) -> Result<()> {
    let n = values.len().max(1) as u32;
    let cell = 48u32;
    let mut img = RgbImage::from_pixel(n * cell + 2, n * cell + 2, Rgb([255, 255, 255]));
    for (i, row) in values.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            if let Some(v) = v {
                let c = colour(*v);
                for y in 0..cell - 2 {
                    for x in 0..cell - 2 {
                        img.put_pixel(1 + j as u32 * cell + x, 1 + i as u32 * cell + y, Rgb(c));
                    }
                }
            }
        }
    }
    save(&img, path)
}

/// One row of [`examples_png`]: benign, adversarial and denoised pixels, and whether the
/// defender flagged the benign and the adversarial image.
pub type ExampleRow = (Vec<f32>, Vec<f32>, Vec<f32>, bool, bool);

/// A grid of example images, one row per example: benign, adversarial, denoised, each scaled
/// up; a green frame marks an image that passed the defender, a red one an image it flagged.
pub fn examples_png(rows: &[ExampleRow], shape: [usize; 3], path: &Path) -> Result<()> {
    let [c, h, w] = shape;
    let scale = 3u32;
    let (tw, th) = (w as u32 * scale + 6, h as u32 * scale + 6);
    let mut img = RgbImage::from_pixel(
        3 * tw,
        (rows.len().max(1)) as u32 * th,
        Rgb([255, 255, 255]),
    );
    for (r, (benign, adv, den, benign_flagged, adv_flagged)) in rows.iter().enumerate() {
        for (k, (pix, frame)) in [
            (benign, Some(*benign_flagged)),
            (adv, Some(*adv_flagged)),
            (den, None),
        ]
        .iter()
        .enumerate()
        {
            let (ox, oy) = (k as u32 * tw, r as u32 * th);
            if let Some(flagged) = frame {
                let col = if *flagged {
                    [214, 39, 40]
                } else {
                    [44, 160, 44]
                };
                for y in 0..th {
                    for x in 0..tw {
                        if x < 2 || y < 2 || x >= tw - 2 || y >= th - 2 {
                            img.put_pixel(ox + x, oy + y, Rgb(col));
                        }
                    }
                }
            }
            for y in 0..h {
                for x in 0..w {
                    let px: [u8; 3] = if c == 1 {
                        let v = (pix[y * w + x] * 255.0).round() as u8;
                        [v, v, v]
                    } else {
                        [0, 1, 2].map(|ch| (pix[ch * h * w + y * w + x] * 255.0).round() as u8)
                    };
                    for dy in 0..scale {
                        for dx in 0..scale {
                            img.put_pixel(
                                ox + 3 + x as u32 * scale + dx,
                                oy + 3 + y as u32 * scale + dy,
                                Rgb(px),
                            );
                        }
                    }
                }
            }
        }
    }
    save(&img, path)
}
