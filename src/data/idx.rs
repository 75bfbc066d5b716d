//! The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.

use std::io::Read;
use std::path::Path;

use super::ImageSet;
use crate::error::{Error, Result};
use crate::util::read_file;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimensions (e.g. `[10000, 28, 28]` for images, `[10000]` for labels).
    pub dims: Vec<usize>,
    /// The bytes, C order.
    pub data: Vec<u8>,
}

/// Reads an IDX file (gzip-compressed or not).
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    read_idx_bytes(&bytes).map_err(|m| Error::format(path, m))
}

/// Parses IDX bytes (gzip-compressed or not); the error is a message without the file name.
pub fn read_idx_bytes(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| format!("corrupt or truncated gzip data: {e}"))?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    if bytes.len() < 4 {
        return Err("too short to be an IDX file".into());
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "bad IDX magic number {:02x}{:02x}{:02x}{:02x} (expected 0000 08 0N)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
            bytes[2]
        ));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 || ndim > 4 {
        return Err(format!("IDX file with {ndim} dimensions (expected 1 to 4)"));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let n: usize = dims.iter().product();
    let body = &bytes[header..];
    if body.len() < n {
        return Err(format!(
            "truncated: dimensions {dims:?} need {n} bytes of data, the file has {}",
            body.len()
        ));
    }
    if body.len() > n {
        return Err(format!(
            "{} unexpected bytes after the data of dimensions {dims:?}",
            body.len() - n
        ));
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

/// Reads an images file and a labels file into an [`ImageSet`] (1 channel).
pub fn read_idx_pair(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<ImageSet> {
    let (ip, lp) = (images.as_ref(), labels.as_ref());
    let img = read_idx(ip)?;
    let lab = read_idx(lp)?;
    idx_to_set(&img, &lab, ip, lp)
}

pub(crate) fn idx_to_set(img: &IdxArray, lab: &IdxArray, ip: &Path, lp: &Path) -> Result<ImageSet> {
    if img.dims.len() != 3 {
        return Err(Error::format(
            ip,
            format!(
                "an images file needs 3 dimensions (N, H, W), this one has {:?}",
                img.dims
            ),
        ));
    }
    if lab.dims.len() != 1 {
        return Err(Error::format(
            lp,
            format!(
                "a labels file needs 1 dimension, this one has {:?}",
                lab.dims
            ),
        ));
    }
    if img.dims[0] != lab.dims[0] {
        return Err(Error::format(
            lp,
            format!(
                "{} labels for {} images in {}",
                lab.dims[0],
                img.dims[0],
                ip.display()
            ),
        ));
    }
    if let Some(bad) = lab.data.iter().find(|&&l| l > 9) {
        return Err(Error::format(
            lp,
            format!("label {bad} is not a digit class 0-9"),
        ));
    }
    let images = img.data.iter().map(|&b| b as f32 / 255.0).collect();
    let labels = lab.data.iter().map(|&l| l as usize).collect();
    ImageSet::new(images, labels, [1, img.dims[1], img.dims[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_and_validates() {
        let ok = idx(&[2, 2], &[1, 2, 3, 4]);
        assert_eq!(read_idx_bytes(&ok).unwrap().dims, vec![2, 2]);
        let truncated = idx(&[2, 2], &[1, 2, 3]);
        assert!(
            read_idx_bytes(&truncated)
                .unwrap_err()
                .contains("truncated")
        );
        let extra = idx(&[2, 2], &[1, 2, 3, 4, 5]);
        assert!(
            read_idx_bytes(&extra)
                .unwrap_err()
                .contains("unexpected bytes")
        );
        let mut magic = ok.clone();
        magic[0] = 7;
        assert!(read_idx_bytes(&magic).unwrap_err().contains("magic"));
        let mut kind = ok.clone();
        kind[2] = 0x0d;
        assert!(read_idx_bytes(&kind).unwrap_err().contains("not supported"));
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            e.write_all(&ok).unwrap();
        }
        assert_eq!(read_idx_bytes(&gz).unwrap().data, vec![1, 2, 3, 4]);
        gz.truncate(gz.len() / 2);
        assert!(read_idx_bytes(&gz).unwrap_err().contains("gzip"));
    }
}
