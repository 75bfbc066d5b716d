//! The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.

use std::io::Read;
use std::path::Path;

use super::ImageSet;
use crate::error::{Error, Result};
use crate::util::{check_inflated_claim, element_count, read_exactly, read_file};

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
///
/// Compressed data are inflated as a stream: the header is read first, its dimensions are
/// checked (no overflow, no more than the compressed size can hold, at most
/// [`MAX_INFLATED_BYTES`](crate::util::MAX_INFLATED_BYTES)), and then exactly that much data.
pub fn read_idx_bytes(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut gz = flate2::read::MultiGzDecoder::new(bytes);
        parse_idx(&mut gz, Some(bytes.len() as u64))
    } else {
        parse_idx(&mut &bytes[..], None)
    }
}

fn parse_idx(r: &mut impl Read, compressed: Option<u64>) -> std::result::Result<IdxArray, String> {
    let short = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "too short to be an IDX file (truncated header)".to_string()
        } else {
            format!("corrupt or truncated gzip data: {e}")
        }
    };
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(short)?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(format!(
            "bad IDX magic number {:02x}{:02x}{:02x}{:02x} (expected 0000 08 0N)",
            magic[0], magic[1], magic[2], magic[3]
        ));
    }
    if magic[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
            magic[2]
        ));
    }
    let ndim = magic[3] as usize;
    if ndim == 0 || ndim > 4 {
        return Err(format!("IDX file with {ndim} dimensions (expected 1 to 4)"));
    }
    let mut raw = vec![0u8; 4 * ndim];
    r.read_exact(&mut raw).map_err(short)?;
    let dims: Vec<usize> = raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let n = element_count(&dims)?;
    if let Some(c) = compressed {
        check_inflated_claim(n as u64, c)?;
    }
    let data = read_exactly(r, n).map_err(|m| format!("{m} (dimensions {dims:?})"))?;
    Ok(IdxArray { dims, data })
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
    if img.dims[1] == 0 || img.dims[2] == 0 {
        return Err(Error::format(
            ip,
            format!("images of {} x {} pixels", img.dims[1], img.dims[2]),
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
                .contains("more data than")
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
        assert!(read_idx_bytes(&gz).unwrap_err().contains("truncated"));
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = Vec::new();
        let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::best());
        e.write_all(bytes).unwrap();
        drop(e);
        gz
    }

    #[test]
    fn hostile_headers_are_refused_before_allocating() {
        // Dimensions whose product wraps around to 0 in 64 bits.
        let wrap = [0, 0, 8, 3, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 4];
        let e = read_idx_bytes(&wrap).unwrap_err();
        assert!(e.contains("too large"), "{e}");
        // A claim of 4 GB in a few bytes of gzip.
        let bomb = gzip(&idx(&[65536, 256, 256], &[]));
        let e = read_idx_bytes(&bomb).unwrap_err();
        assert!(e.contains("limit"), "{e}");
        // A claim of 1 MB whose stream inflates to 50 MB: cut off after the claim.
        let mut long = idx(&[1000, 1000], &[]);
        long.resize(long.len() + 50_000_000, 0);
        let e = read_idx_bytes(&gzip(&long)).unwrap_err();
        assert!(e.contains("more data than"), "{e}");
        // A claim deflate cannot produce from the compressed size.
        let mut liar = gzip(&idx(&[1000, 1000, 100], &[0; 16]));
        liar.truncate(60);
        let e = read_idx_bytes(&liar).unwrap_err();
        assert!(e.contains("more than deflate"), "{e}");
    }

    #[test]
    fn empty_images_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ip, lp) = (dir.path().join("i"), dir.path().join("l"));
        std::fs::write(&ip, idx(&[2, 0, 28], &[])).unwrap();
        std::fs::write(&lp, idx(&[2], &[1, 2])).unwrap();
        let e = read_idx_pair(&ip, &lp).unwrap_err().to_string();
        assert!(e.contains("0 x 28"), "{e}");
    }
}
