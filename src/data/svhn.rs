//! SVHN's cropped digits (`train_32x32.mat`, `test_32x32.mat`, `extra_32x32.mat`): MAT-files
//! with `X`, 32 x 32 x 3 x N uint8 in MATLAB's column-major order, and `y`, N labels where 10
//! means the digit 0.

use std::path::Path;

use super::ImageSet;
use crate::error::{Error, Result};
use crate::io::{MatData, read_mat};

/// Reads an SVHN MAT-file into a 3 x 32 x 32 image set (planar RGB in `[0, 1]`, labels 0-9).
pub fn read_svhn(path: impl AsRef<Path>) -> Result<ImageSet> {
    let path = path.as_ref();
    let mut vars = read_mat(path)?;
    let names = vars.keys().cloned().collect::<Vec<_>>().join(", ");
    let bad = |m: String| Error::format(path, m);
    let x = match vars.remove("X") {
        Some(x) => x,
        None => {
            return Err(bad(format!(
                "no variable X (the images) among [{names}]: not an SVHN file"
            )));
        }
    };
    let y = vars.remove("y").ok_or_else(|| {
        bad(format!(
            "no variable y (the labels) among [{names}]: not an SVHN file"
        ))
    })?;
    let MatData::U8(pixels) = x.data else {
        return Err(bad(format!("X is {}, SVHN images are uint8", x.class)));
    };
    let (h, w, c, n) = match x.dims.as_slice() {
        [h, w, c, n] => (*h, *w, *c, *n),
        [h, w, c] => (*h, *w, *c, 1),
        other => {
            return Err(bad(format!(
                "X has dimensions {other:?}, expected height x width x channels x N"
            )));
        }
    };
    if h == 0 || w == 0 || c == 0 {
        return Err(bad(format!("X has empty images ({h} x {w} x {c})")));
    }
    let labels = match &y.data {
        MatData::F64(v) => v.clone(),
        MatData::U8(v) => v.iter().map(|&b| b as f64).collect(),
    };
    if labels.len() != n {
        return Err(bad(format!(
            "{} labels in y for {n} images in X (dimensions {:?} and {:?})",
            labels.len(),
            y.dims,
            x.dims
        )));
    }
    let labels = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| match l {
            10.0 => Ok(0),
            l if l.fract() == 0.0 && (0.0..=9.0).contains(&l) => Ok(l as usize),
            l => Err(bad(format!(
                "label {l} of image {i} is not a digit (SVHN labels are 1-10, 10 meaning 0)"
            ))),
        })
        .collect::<Result<Vec<usize>>>()?;
    // Column-major (h, w, c, n) to planar row-major (n, c, h, w).
    let per = h * w * c;
    let mut images = vec![0f32; pixels.len()];
    for k in 0..n {
        for ch in 0..c {
            for col in 0..w {
                for row in 0..h {
                    let src = row + h * (col + w * (ch + c * k));
                    images[k * per + ch * h * w + row * w + col] = pixels[src] as f32 / 255.0;
                }
            }
        }
    }
    ImageSet::new(images, labels, [c, h, w]).map_err(|e| bad(e.to_string()))
}
