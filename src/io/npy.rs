//! The NumPy `.npy` format (versions 1, 2 and 3), little-endian, C order.

use std::path::Path;

use crate::error::{Error, Result};
use crate::util::{element_count, read_file, write_atomic};

/// The element data of an array.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f4`
    F32(Vec<f32>),
    /// `<f8`
    F64(Vec<f64>),
    /// `<i8`
    I64(Vec<i64>),
    /// `<i4`
    I32(Vec<i32>),
    /// `|u1`
    U8(Vec<u8>),
    /// `|b1`
    Bool(Vec<bool>),
}

impl NpyData {
    fn len(&self) -> usize {
        match self {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::I64(v) => v.len(),
            NpyData::I32(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::Bool(v) => v.len(),
        }
    }
}

/// A NumPy array: shape and data.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The array's shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// The elements in C order.
    pub data: NpyData,
}

impl NpyArray {
    /// A float32 array.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        NpyArray {
            shape,
            data: NpyData::F32(data),
        }
    }

    /// An int64 array.
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        NpyArray {
            shape,
            data: NpyData::I64(data),
        }
    }

    /// The elements as float32 (floats are rounded, integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::Bool(v) => v.iter().map(|&x| x as u8 as f32).collect(),
        }
    }

    /// The elements as int64, or `None` for a float array.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match &self.data {
            NpyData::I64(v) => Some(v.clone()),
            NpyData::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            NpyData::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            NpyData::Bool(v) => Some(v.iter().map(|&x| x as i64).collect()),
            _ => None,
        }
    }

    /// The dtype descriptor NumPy uses for this array.
    pub(crate) fn descr(&self) -> &'static str {
        match self.data {
            NpyData::F32(_) => "<f4",
            NpyData::F64(_) => "<f8",
            NpyData::I64(_) => "<i8",
            NpyData::I32(_) => "<i4",
            NpyData::U8(_) => "|u1",
            NpyData::Bool(_) => "|b1",
        }
    }
}

/// Reads a `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    read_npy_bytes(&bytes).map_err(|msg| Error::format(path, msg))
}

/// Parses `.npy` bytes; the error is a message without the file name.
pub fn read_npy_bytes(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a NumPy .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start + header_len;
    if bytes.len() < end {
        return Err("truncated .npy header".into());
    }
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    if fortran.trim() != "False" {
        return Err("Fortran-ordered arrays are not supported (save with C order)".into());
    }
    let shape_txt = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let shape = parse_shape(shape_txt)?;
    let n = element_count(&shape)?;
    let body = &bytes[end..];
    let (size, data) = match descr {
        "<f4" | "f4" => (4, None),
        "<f8" | "f8" => (8, None),
        "<i8" | "i8" => (8, None),
        "<i4" | "i4" => (4, None),
        "|u1" | "u1" | "<u1" => (1, None),
        "|b1" | "b1" => (1, None::<()>),
        other => {
            return Err(format!(
                "unsupported dtype {other} (supported: float32, float64, int64, int32, uint8, bool; little-endian)"
            ));
        }
    };
    let _ = data;
    let bytes_needed = n
        .checked_mul(size)
        .ok_or_else(|| format!("shape {shape:?} is too large (its byte size overflows)"))?;
    if body.len() < bytes_needed {
        return Err(format!(
            "truncated data: shape {:?} needs {} bytes, file has {}",
            shape,
            bytes_needed,
            body.len()
        ));
    }
    if body.len() > bytes_needed {
        return Err(format!(
            "{} trailing bytes after the data of shape {:?}",
            body.len() - bytes_needed,
            shape
        ));
    }
    let data = match descr.trim_start_matches(['<', '|']) {
        "f4" => NpyData::F32(
            body.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "f8" => NpyData::F64(
            body.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        "i8" => NpyData::I64(
            body.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        "i4" => NpyData::I32(
            body.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "u1" => NpyData::U8(body.to_vec()),
        _ => NpyData::Bool(body.iter().map(|&b| b != 0).collect()),
    };
    Ok(NpyArray { shape, data })
}

/// Finds the value text for `key` in a Python dict literal.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[pos + key.len() + 2..];
    let colon = rest.find(':')?;
    let rest = rest[colon + 1..].trim_start();
    if rest.starts_with('(') {
        let close = rest.find(')')?;
        Some(&rest[..=close])
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    }
}

fn parse_shape(txt: &str) -> std::result::Result<Vec<usize>, String> {
    let inner = txt.trim().trim_start_matches('(').trim_end_matches(')');
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("bad shape entry {s:?}"))
        })
        .collect()
}

/// Serialises an array as `.npy` (version 1) bytes.
pub fn write_npy_bytes(array: &NpyArray) -> Vec<u8> {
    assert_eq!(
        array.shape.iter().product::<usize>(),
        array.data.len(),
        "npy shape does not match data length"
    );
    let shape = match array.shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", array.shape[0]),
        _ => format!(
            "({})",
            array
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        array.descr(),
        shape
    );
    // Pad so that magic + len + header is a multiple of 64, ending in '\n'.
    let total = 10 + header.len() + 1;
    let pad = (64 - total % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + array.data.len() * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match &array.data {
        NpyData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::U8(v) => out.extend_from_slice(v),
        NpyData::Bool(v) => v.iter().for_each(|&b| out.push(b as u8)),
    }
    out
}

/// Writes an array to a `.npy` file atomically.
pub fn write_npy(path: impl AsRef<Path>, array: &NpyArray) -> Result<()> {
    write_atomic(path, &write_npy_bytes(array))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_dtypes() {
        let arrays = [
            NpyArray::f32(vec![2, 3], vec![0.0, 1.5, -2.0, 3.25, 4.0, 5.0]),
            NpyArray::i64(vec![3], vec![-1, 0, 7]),
            NpyArray {
                shape: vec![],
                data: NpyData::F64(vec![2.5]),
            },
            NpyArray {
                shape: vec![2, 2],
                data: NpyData::U8(vec![0, 1, 2, 255]),
            },
        ];
        for a in arrays {
            let bytes = write_npy_bytes(&a);
            assert_eq!(read_npy_bytes(&bytes).unwrap(), a);
        }
    }

    #[test]
    fn rejects_bad_files() {
        assert!(
            read_npy_bytes(b"hello world")
                .unwrap_err()
                .contains("magic")
        );
        let mut bytes = write_npy_bytes(&NpyArray::f32(vec![4], vec![1.0; 4]));
        bytes.truncate(bytes.len() - 3);
        assert!(read_npy_bytes(&bytes).unwrap_err().contains("truncated"));
        let mut bytes = write_npy_bytes(&NpyArray::f32(vec![1], vec![1.0]));
        bytes.push(0);
        assert!(read_npy_bytes(&bytes).unwrap_err().contains("trailing"));
    }

    #[test]
    fn shapes_that_overflow_are_refused() {
        for shape in [
            "(4294967296, 4294967296, 2)",
            "(4611686018427387904,)",
            "(18446744073709551615, 2)",
        ] {
            let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
            bytes.extend_from_slice(header.as_bytes());
            let e = read_npy_bytes(&bytes).unwrap_err();
            assert!(e.contains("too large"), "{shape}: {e}");
        }
    }
}
