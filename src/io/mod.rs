//! NumPy interchange: `.npy` arrays and `.npz` archives, readable and writable by `numpy`.

mod npy;
mod npz;

pub use npy::{NpyArray, NpyData, read_npy, read_npy_bytes, write_npy, write_npy_bytes};
pub use npz::{read_npz, read_npz_bytes, write_npz};
