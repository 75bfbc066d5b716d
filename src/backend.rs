//! The one place that names the compute backend.
//!
//! Model and algorithm code in defed never names a backend: burn 0.22 dispatches on the
//! [`Device`] a tensor lives on. This module picks the default device; other backends (CUDA,
//! wgpu) are added here behind cargo features.

pub use burn::tensor::Device;

/// The default compute device: burn's pure-Rust `flex` CPU backend (SIMD + rayon).
pub fn default_device() -> Device {
    Device::flex()
}

/// The default device with automatic differentiation enabled (training, attacks).
pub fn autodiff_device() -> Device {
    default_device().autodiff()
}
