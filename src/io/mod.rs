//! File formats of arrays: NumPy `.npy` arrays and `.npz` archives (read and written, for
//! interchange with `numpy`), and MATLAB level-5 MAT-files (read, for SVHN).

mod mat;
mod npy;
mod npz;

pub use mat::{MAX_MAT_ELEMENT_BYTES, MatArray, MatData, read_mat, read_mat_bytes};
pub use npy::{NpyArray, NpyData, read_npy, read_npy_bytes, write_npy, write_npy_bytes};
pub use npz::{read_npz, read_npz_bytes, write_npz};
