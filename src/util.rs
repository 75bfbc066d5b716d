//! Small shared helpers: atomic file writes and tensor conversions.

use std::io::Write;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};

use crate::backend::Device;
use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to disk,
/// then renamed over the target. A crash leaves either the old file or the new one, never half.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Largest payload accepted from one compressed stream (a gzip file, an `.npz` member): 1 GiB.
/// A larger claim is refused before anything is inflated.
pub const MAX_INFLATED_BYTES: u64 = 1 << 30;

/// Deflate cannot expand data more than about 1032:1, so a header claiming more than this many
/// bytes per compressed byte is lying.
pub(crate) const MAX_DEFLATE_RATIO: u64 = 1032;

/// The number of elements of an array with dimensions `dims`, or a message when the product
/// does not fit in memory addresses (a corrupt or hostile header).
pub(crate) fn element_count(dims: &[usize]) -> std::result::Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| format!("dimensions {dims:?} are too large (their product overflows)"))
}

/// Checks that `claimed` decompressed bytes are possible from `compressed` input bytes and
/// within [`MAX_INFLATED_BYTES`].
pub(crate) fn check_inflated_claim(
    claimed: u64,
    compressed: u64,
) -> std::result::Result<(), String> {
    if claimed > MAX_INFLATED_BYTES {
        return Err(format!(
            "claims {claimed} bytes of data once decompressed, more than the {MAX_INFLATED_BYTES}-byte limit"
        ));
    }
    if claimed
        > compressed
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(4096)
    {
        return Err(format!(
            "claims {claimed} bytes of data from {compressed} compressed bytes, more than deflate can produce (corrupt or hostile file)"
        ));
    }
    Ok(())
}

/// Reads exactly `len` bytes from a stream and checks that nothing follows, without ever
/// holding more than `len + 1` bytes: a stream that inflates past its claim is cut off.
pub(crate) fn read_exactly(
    mut r: impl std::io::Read,
    len: usize,
) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    (&mut r)
        .take(len as u64)
        .read_to_end(&mut out)
        .map_err(|e| format!("corrupt or truncated compressed data: {e}"))?;
    if out.len() < len {
        return Err(format!(
            "truncated: the header claims {len} bytes of data, the file has {}",
            out.len()
        ));
    }
    let mut extra = [0u8; 1];
    match r.read(&mut extra) {
        Ok(0) => Ok(out),
        Ok(_) => Err(format!(
            "more data than the {len} bytes the header claims (corrupt or hostile file)"
        )),
        Err(e) => Err(format!(
            "corrupt compressed data after the claimed {len} bytes: {e}"
        )),
    }
}

/// Row `i` of a flat buffer of rows of `per` values (image `i` of a batch, logits of image `i`).
#[inline]
pub fn row<T>(x: &[T], i: usize, per: usize) -> &[T] {
    &x[i * per..(i + 1) * per]
}

/// Row `i` of a flat buffer of rows of `per` values, mutable.
#[inline]
pub(crate) fn row_mut<T>(x: &mut [T], i: usize, per: usize) -> &mut [T] {
    &mut x[i * per..(i + 1) * per]
}

/// Builds an `N x C x H x W` tensor from a flat buffer.
pub fn tensor4(data: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Copies a float tensor of any rank into a flat `Vec<f32>`.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor converts to f32")
}

/// Index of the largest value of each row of a row-major `rows x cols` matrix.
pub(crate) fn argmax_rows(values: &[f32], cols: usize) -> Vec<usize> {
    values
        .chunks(cols)
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}

/// Cross-entropy of each row of `logits` (`N x classes`) against the same row of `target`
/// (one-hot labels or probabilities): `-sum_k target_k log softmax(logits)_k`, one per row.
pub(crate) fn cross_entropy_rows(logits: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    let n = logits.dims()[0];
    (burn::tensor::activation::log_softmax(logits, 1) * target)
        .sum_dim(1)
        .neg()
        .reshape([n])
}

/// The margin of each row's class `c` (`one_hot`: `N x classes`): `z_c - max_{j != c} z_j`, one per
/// row (the class is masked out with a large negative value before the max).
pub(crate) fn margin_rows(logits: Tensor<2>, one_hot: Tensor<2>) -> Tensor<1> {
    let n = logits.dims()[0];
    let zc = (logits.clone() * one_hot.clone()).sum_dim(1);
    let others = logits - one_hot.mul_scalar(1e9);
    (zc - others.max_dim(1)).reshape([n])
}

/// A one-hot `N x classes` matrix for the given labels.
pub(crate) fn one_hot(labels: &[usize], classes: usize, device: &Device) -> Tensor<2> {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [labels.len(), classes]), device)
}

/// A seed derived from a base seed and a tag (epoch, batch...), so that resumed runs and
/// batch-by-batch attacks draw the same numbers whatever the order.
pub fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    // SplitMix64 finaliser over the combined words.
    let mut z = seed
        .wrapping_add(a.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(b.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
