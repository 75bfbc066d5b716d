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
//!
//! The stages in a few lines: a classifier, images it gets right, PGD against it, and a
//! defender calibrated on other benign images judging the adversarial ones.
//!
//! ```
//! use defed::attack::{
//!     AttackKind, AttackModel, AttackSettings, Norm, Target, benign_set, build_attack, run_attack,
//! };
//! use defed::defense::{Defender, Policy, ThresholdRule};
//! use defed::model::embedded;
//!
//! let device = defed::default_device();
//! // The embedded LeNet; `defed::model::load_classifier` reads any checkpoint file.
//! let (classifier, _) = embedded::default_classifier(&device)?;
//! let (_, held_out) = defed::data::embedded_mnist().split(0.1, 0);
//! let model = AttackModel::new(&classifier, &device);
//! let benign = benign_set(&model, &held_out, 40, 64);
//! let pgd = build_attack(AttackKind::Pgd, Norm::Linf, Some(0.3), &AttackSettings::default())?;
//! let adv = run_attack(pgd.as_ref(), &model, &benign.take(8), 8, 0, false, Target::Untargeted)?;
//!
//! let mut defender = Defender::embedded(&device)?;
//! let calibration = benign.select(&(8..40).collect::<Vec<_>>());
//! let scores = defender.scores(&calibration.images, &device)?;
//! defender.calibrate(&scores, ThresholdRule::KStd(2.0), calibration.indices.clone(), "digits")?;
//! if !adv.adv.is_empty() {
//!     let names: Vec<String> = defender.denoisers.iter().map(|d| d.name.clone()).collect();
//!     for verdict in defender.defend(&adv.adv, &device)? {
//!         let answer = verdict.answer(Policy::Reject, &names);
//!         // Rejected inputs get no label.
//!         assert_eq!(answer.label.is_none(), verdict.adversarial);
//!     }
//! }
//! # Ok::<(), defed::Error>(())
//! ```

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
