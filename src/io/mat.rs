//! MATLAB level-5 MAT-files (the format of SVHN's `train_32x32.mat`): numeric arrays, stored
//! plainly or zlib-compressed (`miCOMPRESSED`), little- or big-endian.
//!
//! Only what data sets use is read: real numeric matrices of any class, with their dimensions
//! (column-major, as MATLAB stores them). Cell arrays, structures, sparse and complex arrays
//! are skipped with a note in the error if asked for. Every size is checked against what the
//! file holds; compressed elements are inflated as streams within
//! [`MAX_MAT_ELEMENT_BYTES`] and deflate's largest ratio.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::util::{MAX_DEFLATE_RATIO, element_count, read_file};

/// Largest decompressed element accepted (8 GiB: SVHN's `extra_32x32.mat` holds 1.6 GB).
pub const MAX_MAT_ELEMENT_BYTES: u64 = 8 << 30;

/// The values of a numeric array: bytes kept as bytes, every other class as `f64`.
#[derive(Debug, Clone, PartialEq)]
pub enum MatData {
    /// `uint8` arrays (images).
    U8(Vec<u8>),
    /// Any other numeric class, converted.
    F64(Vec<f64>),
}

impl MatData {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            MatData::U8(v) => v.len(),
            MatData::F64(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A numeric MATLAB array.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// Dimensions, MATLAB's order (the first varies fastest in `data`).
    pub dims: Vec<usize>,
    /// MATLAB class name (`uint8`, `double`, ...).
    pub class: &'static str,
    /// The values, column-major.
    pub data: MatData,
}

/// Reads every numeric array of a MAT-file, by variable name.
pub fn read_mat(path: impl AsRef<Path>) -> Result<BTreeMap<String, MatArray>> {
    let path = path.as_ref();
    read_mat_bytes(&read_file(path)?).map_err(|m| Error::format(path, m))
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

fn class_name(c: u8) -> Option<&'static str> {
    Some(match c {
        6 => "double",
        7 => "single",
        8 => "int8",
        9 => "uint8",
        10 => "int16",
        11 => "uint16",
        12 => "int32",
        13 => "uint32",
        14 => "int64",
        15 => "uint64",
        _ => return None,
    })
}

#[derive(Clone, Copy)]
struct Endian {
    big: bool,
}

impl Endian {
    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    fn i32(self, b: &[u8]) -> i32 {
        self.u32(b) as i32
    }
}

/// Parses MAT-file bytes; the error is a message without the file name.
pub fn read_mat_bytes(bytes: &[u8]) -> std::result::Result<BTreeMap<String, MatArray>, String> {
    if bytes.len() < 128 {
        return Err("too short to be a MAT-file (no 128-byte header)".into());
    }
    // MATLAB 7.3 files are HDF5 behind a 512-byte user block whose text names the version.
    const HDF5: &[u8] = b"\x89HDF\r\n\x1a\n";
    if bytes.starts_with(b"MATLAB 7.3")
        || bytes.starts_with(HDF5)
        || bytes.get(512..520) == Some(HDF5)
    {
        return Err("a MATLAB 7.3 (HDF5) file: save it with -v7 or -v6 to read it here".into());
    }
    let endian = match &bytes[126..128] {
        b"IM" => Endian { big: false },
        b"MI" => Endian { big: true },
        other => {
            return Err(format!(
                "not a MATLAB level-5 MAT-file (endian indicator {other:?}, expected \"IM\" or \"MI\")"
            ));
        }
    };
    let mut out = BTreeMap::new();
    let mut rest = &bytes[128..];
    let mut index = 0;
    while rest.len() >= 8 {
        let Element {
            kind,
            data: body,
            rest: next,
        } = element(rest, endian)?;
        match kind {
            MI_COMPRESSED => {
                let inner = inflate(body, endian)?;
                let Element {
                    kind: k,
                    data: b,
                    rest: _,
                } = element(&inner, endian)
                    .map_err(|m| format!("compressed element {index}: {m}"))?;
                if k == MI_MATRIX {
                    insert(&mut out, matrix(b, endian), index)?;
                }
            }
            MI_MATRIX => insert(&mut out, matrix(body, endian), index)?,
            _ => {}
        }
        rest = next;
        index += 1;
    }
    Ok(out)
}

fn insert(
    out: &mut BTreeMap<String, MatArray>,
    m: std::result::Result<Option<(String, MatArray)>, String>,
    index: usize,
) -> std::result::Result<(), String> {
    match m.map_err(|e| format!("variable {index}: {e}"))? {
        Some((name, a)) => {
            out.insert(name, a);
            Ok(())
        }
        None => Ok(()),
    }
}

/// One data element: its type, its data, and what follows it (after padding).
struct Element<'a> {
    kind: u32,
    data: &'a [u8],
    rest: &'a [u8],
}

/// Splits one data element off `b`.
fn element(b: &[u8], e: Endian) -> std::result::Result<Element<'_>, String> {
    if b.len() < 8 {
        return Err("truncated element tag".into());
    }
    let first = e.u32(&b[0..4]);
    // The small data element format: type and size in the first 4 bytes, data in the next 4.
    let small = first >> 16;
    if small != 0 {
        let n = small as usize;
        if n > 4 {
            return Err(format!("small data element of {n} bytes (at most 4)"));
        }
        return Ok(Element {
            kind: first & 0xffff,
            data: &b[4..4 + n],
            rest: &b[8..],
        });
    }
    let n = e.u32(&b[4..8]) as usize;
    let body = b.get(8..).unwrap_or(&[]);
    if body.len() < n {
        return Err(format!(
            "truncated: an element claims {n} bytes, {} remain",
            body.len()
        ));
    }
    let (data, after) = body.split_at(n);
    // Elements are padded to 8 bytes, except compressed ones.
    let pad = if first == MI_COMPRESSED {
        0
    } else {
        (8 - n % 8) % 8
    };
    let after = after.get(pad.min(after.len())..).unwrap_or(&[]);
    Ok(Element {
        kind: first,
        data,
        rest: after,
    })
}

/// Inflates a compressed element: its first 8 bytes give the inner element's size, which is
/// checked before the rest is inflated; the stream is cut off past that size.
fn inflate(z: &[u8], e: Endian) -> std::result::Result<Vec<u8>, String> {
    let mut dec = flate2::read::ZlibDecoder::new(z);
    let mut out = vec![0u8; 8];
    dec.read_exact(&mut out)
        .map_err(|err| format!("corrupt compressed element: {err}"))?;
    let first = e.u32(&out[0..4]);
    let claimed = if first >> 16 != 0 {
        0
    } else {
        e.u32(&out[4..8]) as u64
    };
    let limit = (z.len() as u64)
        .saturating_mul(MAX_DEFLATE_RATIO)
        .saturating_add(4096)
        .min(MAX_MAT_ELEMENT_BYTES);
    if claimed > limit {
        return Err(format!(
            "a compressed element claims {claimed} bytes from {} compressed bytes (more than deflate can produce, or over the {MAX_MAT_ELEMENT_BYTES}-byte limit)",
            z.len()
        ));
    }
    // The inner element, its padding (at most 7 bytes), and one byte more to see excess.
    (&mut dec)
        .take(claimed + 8)
        .read_to_end(&mut out)
        .map_err(|err| format!("corrupt compressed element: {err}"))?;
    let got = out.len() as u64 - 8;
    if got < claimed {
        return Err(format!(
            "truncated compressed element: {got} of {claimed} bytes"
        ));
    }
    if got > claimed + 7 {
        return Err(format!(
            "a compressed element inflates past the {claimed} bytes it claims (corrupt or hostile file)"
        ));
    }
    Ok(out)
}

/// A matrix element's sub-elements: flags, dimensions, name, real part. `None` for arrays
/// that are not numeric (cells, structures, sparse, ...).
fn matrix(b: &[u8], e: Endian) -> std::result::Result<Option<(String, MatArray)>, String> {
    let Element {
        kind,
        data: flags,
        rest,
    } = element(b, e)?;
    if kind != MI_UINT32 || flags.len() < 8 {
        return Err("matrix without array flags".into());
    }
    let f = e.u32(&flags[0..4]);
    let class = (f & 0xff) as u8;
    let complex = f & 0x0800 != 0;
    let Element {
        kind,
        data: dims_raw,
        rest,
    } = element(rest, e)?;
    if kind != MI_INT32 || dims_raw.len() % 4 != 0 || dims_raw.len() < 8 {
        return Err("matrix without dimensions".into());
    }
    let dims = dims_raw
        .chunks_exact(4)
        .map(|c| usize::try_from(e.i32(c)).map_err(|_| "negative dimension".to_string()))
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    let Element {
        kind,
        data: name_raw,
        rest,
    } = element(rest, e)?;
    if kind != MI_INT8 && kind != MI_UINT8 {
        return Err("matrix without a name".into());
    }
    let name = String::from_utf8_lossy(name_raw).to_string();
    let Some(class) = class_name(class) else {
        return Ok(None);
    };
    if complex {
        return Err(format!("{name}: complex arrays are not supported"));
    }
    let n = element_count(&dims)?;
    let Element {
        kind,
        data: real,
        rest: _,
    } = element(rest, e)?;
    let width = match kind {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        other => return Err(format!("{name}: unsupported data type {other}")),
    };
    if real.len() != n.checked_mul(width).ok_or("dimensions too large")? {
        return Err(format!(
            "{name}: dimensions {dims:?} need {n} values, the data holds {} bytes of {width}-byte values",
            real.len()
        ));
    }
    let data = if class == "uint8" && kind == MI_UINT8 {
        MatData::U8(real.to_vec())
    } else {
        let big = e.big;
        let v = |c: &[u8]| -> f64 {
            let mut a = [0u8; 8];
            a[..c.len()].copy_from_slice(c);
            if big {
                a[..c.len()].reverse();
            }
            match kind {
                MI_INT8 => c[0] as i8 as f64,
                MI_UINT8 => c[0] as f64,
                MI_INT16 => i16::from_le_bytes([a[0], a[1]]) as f64,
                MI_UINT16 => u16::from_le_bytes([a[0], a[1]]) as f64,
                MI_INT32 => i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                MI_UINT32 => u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                MI_SINGLE => f32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                MI_INT64 => i64::from_le_bytes(a) as f64,
                MI_UINT64 => u64::from_le_bytes(a) as f64,
                _ => f64::from_le_bytes(a),
            }
        };
        MatData::F64(real.chunks_exact(width).map(v).collect())
    };
    Ok(Some((name, MatArray { dims, class, data })))
}

#[cfg(test)]
mod tests {
    use super::read_mat_bytes;

    #[test]
    fn matlab_7_3_files_are_named() {
        let mut b = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 2024 HDF5 schema 1.00 .".to_vec();
        b.resize(512, b' ');
        b.extend_from_slice(b"\x89HDF\r\n\x1a\n");
        b.resize(1024, 0);
        let e = read_mat_bytes(&b).unwrap_err();
        assert!(e.contains("7.3"), "{e}");
        let mut h = vec![0u8; 512];
        h.extend_from_slice(b"\x89HDF\r\n\x1a\n");
        assert!(read_mat_bytes(&h).unwrap_err().contains("7.3"));
    }
}
