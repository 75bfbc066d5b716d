//! NumPy `.npz` archives: a zip of `.npy` members.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::path::Path;

use super::npy::{NpyArray, read_npy_bytes, write_npy_bytes};
use crate::error::{Error, Result};
use crate::util::{read_file, write_atomic};

/// Reads every array of a `.npz` file, keyed by name (without the `.npy` suffix).
pub fn read_npz(path: impl AsRef<Path>) -> Result<BTreeMap<String, NpyArray>> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| Error::format(path, format!("not a valid .npz (zip) archive: {e}")))?;
    let mut out = BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive
            .by_index(i)
            .map_err(|e| Error::format(path, format!("corrupt .npz member {i}: {e}")))?;
        let name = file.name().to_string();
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|e| Error::format(path, format!("corrupt .npz member {name}: {e}")))?;
        let array =
            read_npy_bytes(&buf).map_err(|m| Error::format(path, format!("member {name}: {m}")))?;
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
}
