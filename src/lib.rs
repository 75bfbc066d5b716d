#![warn(missing_docs)]
//! # defed
//!
//! A Rust toolkit that protects image classifiers from adversarial examples with
//! edge-feature-enhanced denoisers (Xiao et al., "Defed", IEEE Internet of Things Journal, 2022).
//!
//! The crate is organised by the stages of the Defed system:
//! - [`data`]: data sets (IDX, CIFAR-10, image folders, the embedded MNIST digits), batching,
//!   noise, downloads;
//! - [`model`]: the classifiers (LeNet-5, the SVHN VGG), the denoisers (BaseNet and Defed), the
//!   fixed blur / Laplacian / Sobel filters, and checkpoints (safetensors with metadata, and the
//!   original authors' PyTorch `.pth` files);
//! - [`attack`]: the benign set and adversarial attacks (FGSM, PGD, DeepFool, JSMA,
//!   Carlini-Wagner, HopSkipJump, Square);
//! - [`train`]: training classifiers and denoisers (resumable, logged);
//! - [`eval`]: image-quality metrics (PSNR, SSIM) and accuracy;
//! - [`defense`]: the adversarial score and the multi-denoiser defender;
//! - [`pipeline`]: stages 1-5 end to end on the embedded digits;
//! - [`serve`]: the defender as an HTTP service (`defed serve`) and its client;
//! - [`io`]: NumPy `.npy` / `.npz` interchange.
//!
//! Tensors are float32 in `[0, 1]`, layout `N x C x H x W`.

pub mod attack;
pub mod backend;
pub mod bench;
pub mod data;
pub mod defense;
pub mod error;
pub mod eval;
pub mod io;
pub mod model;
pub mod pipeline;
pub mod serve;
pub mod train;
pub mod util;

pub use backend::{Device, DeviceSpec, autodiff_device, default_device, set_default_device};
pub use error::{Error, Result};
