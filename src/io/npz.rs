//! NumPy `.npz` archives: a zip of `.npy` members.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::Path;

use super::npy::{NpyArray, read_npy_bytes, write_npy_bytes};
use crate::error::{Error, Result};
use crate::util::{check_inflated_claim, read_exactly, read_file, write_atomic};

/// Reads every array of a `.npz` file, keyed by name (without the `.npy` suffix).
///
/// Each member is inflated as a stream, after checking that its declared size is one deflate
/// can produce from its compressed size and within
/// [`MAX_INFLATED_BYTES`](crate::util::MAX_INFLATED_BYTES); a member that inflates past its
/// declared size is cut off with an error.
pub fn read_npz(path: impl AsRef<Path>) -> Result<BTreeMap<String, NpyArray>> {
    let path = path.as_ref();
    read_npz_bytes(read_file(path)?).map_err(|m| Error::format(path, m))
}

/// Parses `.npz` bytes, with the checks of [`read_npz`]; the error is a message without the
/// file name.
pub fn read_npz_bytes(bytes: Vec<u8>) -> std::result::Result<BTreeMap<String, NpyArray>, String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a valid .npz (zip) archive: {e}"))?;
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut file = archive
            .by_index(i)
            .map_err(|e| format!("corrupt .npz member {i}: {e}"))?;
        let name = file.name().to_string();
        let claimed = file.size();
        total = total.saturating_add(claimed);
        let buf = check_inflated_claim(claimed, file.compressed_size())
            .and_then(|()| check_inflated_claim(total, u64::MAX))
            .and_then(|()| {
                usize::try_from(claimed).map_err(|_| "too large for this machine".to_string())
            })
            .and_then(|len| read_exactly(&mut file, len))
            .map_err(|m| format!("member {name}: {m}"))?;
        let array = read_npy_bytes(&buf).map_err(|m| format!("member {name}: {m}"))?;
        out.insert(name.trim_end_matches(".npy").to_string(), array);
    }
    Ok(out)
}

/// Writes named arrays to a `.npz` file (deflate-compressed, like `numpy.savez_compressed`),
/// atomically.
pub fn write_npz<'a>(
    path: impl AsRef<Path>,
    arrays: impl IntoIterator<Item = (&'a str, &'a NpyArray)>,
) -> Result<()> {
    let path = path.as_ref();
    let mut buf = Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, array) in arrays {
            zip.start_file(format!("{name}.npy"), options)
                .map_err(|e| Error::format(path, format!("writing member {name}: {e}")))?;
            zip.write_all(&write_npy_bytes(array))
                .map_err(|e| Error::io(path, e))?;
        }
        zip.finish()
            .map_err(|e| Error::format(path, format!("finishing archive: {e}")))?;
    }
    write_atomic(path, &buf.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npz_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npz");
        let x = NpyArray::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let y = NpyArray::i64(vec![2], vec![3, 9]);
        write_npz(&p, [("x", &x), ("y", &y)]).unwrap();
        let m = read_npz(&p).unwrap();
        assert_eq!(m["x"], x);
        assert_eq!(m["y"], y);
        std::fs::write(&p, b"garbage").unwrap();
        assert!(read_npz(&p).unwrap_err().to_string().contains("a.npz"));
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // 2 GB of zeros declared: refused before inflating.
        let p = dir.path().join("bomb.npz");
        let mut buf = Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(true);
            zip.start_file("x.npy", options).unwrap();
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..1100 {
                zip.write_all(&chunk).unwrap();
            }
            zip.finish().unwrap();
        }
        let bytes = buf.into_inner();
        assert!(bytes.len() < 4 << 20, "{}", bytes.len());
        std::fs::write(&p, &bytes).unwrap();
        let e = read_npz(&p).unwrap_err().to_string();
        assert!(e.contains("bomb.npz") && e.contains("limit"), "{e}");
    }
}
