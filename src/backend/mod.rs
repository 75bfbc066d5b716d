//! The one place that names the compute backend.
//!
//! Model and algorithm code in defed never names a backend: burn 0.22 dispatches on the
//! [`Device`] a tensor lives on. This module picks the default device. The pure-Rust `flex`
//! CPU backend is always built; burn's CUDA backend (cargo feature `cuda`) and its portable GPU
//! backend (`wgpu`, or `vulkan` to pin Vulkan) are optional. A process chooses with
//! [`set_default_device`] (the CLI's `--device`, or the `DEFED_DEVICE` environment variable).

pub mod batchnorm;
pub mod conv;
pub(crate) mod filter;
pub(crate) mod flex;
pub(crate) mod kernels;
pub(crate) mod linear;
pub mod pool;
pub(crate) mod shuffle;

use std::str::FromStr;
use std::sync::OnceLock;

pub use burn::tensor::Device;

use crate::error::{Error, Result};

/// A compute device named on the command line or in `DEFED_DEVICE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// burn's pure-Rust `flex` CPU backend (SIMD + rayon): always available.
    #[default]
    Cpu,
    /// burn's CUDA backend on the GPU with this index (feature `cuda`).
    Cuda(usize),
    /// burn's wgpu backend on its preferred adapter (feature `wgpu`).
    Wgpu,
    /// burn's wgpu backend pinned to Vulkan (feature `vulkan`).
    Vulkan,
}

impl DeviceSpec {
    /// Every device kind this build can use, for help texts and errors.
    pub fn available() -> Vec<&'static str> {
        let mut kinds = vec!["cpu"];
        if cfg!(feature = "cuda") {
            kinds.push("cuda[:N]");
        }
        if cfg!(feature = "wgpu") {
            kinds.push("wgpu");
        }
        if cfg!(feature = "vulkan") {
            kinds.push("vulkan");
        }
        kinds
    }

    /// The burn device, or an error naming the cargo feature this build lacks.
    pub fn device(self) -> Result<Device> {
        let missing = |feature: &str| {
            Error::Invalid(format!(
                "device {self} needs defed built with `--features {feature}` (this build has: {})",
                Self::available().join(", ")
            ))
        };
        match self {
            DeviceSpec::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(index) => Ok(Device::cuda(index)),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => Err(missing("cuda")),
            #[cfg(feature = "wgpu")]
            DeviceSpec::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(not(feature = "wgpu"))]
            DeviceSpec::Wgpu => Err(missing("wgpu")),
            #[cfg(feature = "vulkan")]
            DeviceSpec::Vulkan => Ok(Device::vulkan(Default::default())),
            #[cfg(not(feature = "vulkan"))]
            DeviceSpec::Vulkan => Err(missing("vulkan")),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Wgpu => f.write_str("wgpu"),
            DeviceSpec::Vulkan => f.write_str("vulkan"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let bad = || {
            Error::Invalid(format!(
                "unknown device {s:?} (expected cpu, cuda, cuda:N, wgpu or vulkan)"
            ))
        };
        match s.as_str() {
            "cpu" | "flex" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            "wgpu" => Ok(DeviceSpec::Wgpu),
            "vulkan" => Ok(DeviceSpec::Vulkan),
            other => match other.strip_prefix("cuda:") {
                Some(i) => i.parse().map(DeviceSpec::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

static DEFAULT: OnceLock<Device> = OnceLock::new();

/// Makes `spec` this process's default device. Call it once, before any tensor work; a second
/// call with another device is an error (tensors already made would live on the first).
pub fn set_default_device(spec: DeviceSpec) -> Result<()> {
    let device = spec.device()?;
    if spec != DeviceSpec::Cpu {
        probe(spec, &device)?;
    }
    let chosen = DEFAULT.get_or_init(|| device.clone());
    if *chosen != device {
        return Err(Error::Invalid(format!(
            "the default device is already {chosen:?}; cannot switch to {spec}"
        )));
    }
    Ok(())
}

/// Opens a GPU device with one tiny tensor: burn's runtimes panic when no driver or adapter is
/// found, which becomes an error here instead of a crash in the middle of a job.
fn probe(spec: DeviceSpec, device: &Device) -> Result<()> {
    let d = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(move || {
        burn::tensor::Tensor::<1>::zeros([1], &d).into_data();
    });
    std::panic::set_hook(hook);
    opened.map_err(|_| {
        Error::Invalid(format!(
            "device {spec} could not be opened (no GPU, driver or Vulkan loader found?)"
        ))
    })
}

/// The default compute device: the one [`set_default_device`] chose, else burn's pure-Rust
/// `flex` CPU backend (SIMD + rayon).
pub fn default_device() -> Device {
    DEFAULT.get_or_init(Device::flex).clone()
}

/// The default device with automatic differentiation enabled (training, attacks).
pub fn autodiff_device() -> Device {
    default_device().autodiff()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(1));
        assert_eq!("vulkan".parse::<DeviceSpec>().unwrap(), DeviceSpec::Vulkan);
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!(DeviceSpec::Cpu.device().is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_feature_is_a_clear_error() {
        let err = DeviceSpec::Cuda(0).device().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
