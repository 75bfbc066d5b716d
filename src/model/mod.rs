//! Models: the classifiers, the denoisers, their fixed filters, and checkpoints.

mod basenet;
pub(crate) mod blocks;
pub mod checkpoint;
pub mod defed;
pub mod embedded;
pub mod filters;
mod lenet;
mod madry;
mod svhn;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

pub use basenet::BaseNet;
pub use checkpoint::{CheckpointMeta, LoadOptions, load_classifier, load_denoiser, save_model};
pub use defed::Defed;
pub use filters::EdgeMethod;
pub use lenet::LeNet;
pub use madry::{MadryCnn, MadryWidths};
pub use svhn::SvhnNet;

use crate::backend::Device;
use crate::error::{Error, Result};

/// The network architectures defed knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// LeNet-5 classifier, 1 x 28 x 28.
    Lenet,
    /// The MNIST robustness CNN of Madry et al. (2018), C x 28 x 28.
    MadryCnn,
    /// The VGG-style SVHN classifier, C x 32 x 32.
    SvhnVgg,
    /// The Defed denoiser (the original's `ERN`).
    Defed,
    /// The BaseNet denoiser.
    Basenet,
}

impl Architecture {
    /// The name used on the command line and in metadata.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Lenet => "lenet",
            Architecture::MadryCnn => "madry-cnn",
            Architecture::SvhnVgg => "svhn-vgg",
            Architecture::Defed => "defed",
            Architecture::Basenet => "basenet",
        }
    }

    /// Whether this is a classifier (as opposed to a denoiser).
    pub fn is_classifier(self) -> bool {
        matches!(
            self,
            Architecture::Lenet | Architecture::MadryCnn | Architecture::SvhnVgg
        )
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Architecture {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lenet" | "lenet5" | "lenet-5" => Ok(Architecture::Lenet),
            "madry-cnn" | "madry" | "cnn" => Ok(Architecture::MadryCnn),
            "svhn-vgg" | "svhn" | "vgg" => Ok(Architecture::SvhnVgg),
            "defed" | "ern" => Ok(Architecture::Defed),
            "basenet" => Ok(Architecture::Basenet),
            other => Err(format!(
                "unknown architecture {other:?} (expected lenet, madry-cnn, svhn-vgg, defed or basenet)"
            )),
        }
    }
}

/// Classes of every classifier defed builds (the digits, SVHN's and CIFAR-10's ten).
pub const CLASSES: usize = 10;

/// A trained image classifier of any supported architecture.
#[derive(Debug, Clone)]
pub enum Classifier {
    /// LeNet-5.
    Lenet(Box<LeNet>),
    /// The Madry et al. CNN.
    Madry(Box<MadryCnn>),
    /// The SVHN VGG.
    SvhnVgg(Box<SvhnNet>),
}

impl Classifier {
    /// Logits for a batch `N x C x H x W` (unchecked; see [`Classifier::try_logits`]).
    pub fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Classifier::Lenet(m) => m.forward(x),
            Classifier::Madry(m) => m.forward(x),
            Classifier::SvhnVgg(m) => m.forward(x),
        }
    }

    /// Logits after checking the batch's shape.
    pub fn try_logits(&self, x: Tensor<4>) -> Result<Tensor<2>> {
        let [_, c, h, w] = x.dims();
        let want = self.input_shape();
        if [c, h, w] != want {
            return Err(Error::Shape(format!(
                "the {} classifier takes {}x{}x{} images, got {c}x{h}x{w}",
                self.architecture(),
                want[0],
                want[1],
                want[2]
            )));
        }
        Ok(self.logits(x))
    }

    /// The `C x H x W` shape of the images it takes.
    pub fn input_shape(&self) -> [usize; 3] {
        match self {
            Classifier::Lenet(_) => [1, 28, 28],
            Classifier::Madry(m) => [m.channels(), 28, 28],
            Classifier::SvhnVgg(m) => [m.features.l0.weight.dims()[1], 32, 32],
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        CLASSES
    }

    /// Its architecture.
    pub fn architecture(&self) -> Architecture {
        match self {
            Classifier::Lenet(_) => Architecture::Lenet,
            Classifier::Madry(_) => Architecture::MadryCnn,
            Classifier::SvhnVgg(_) => Architecture::SvhnVgg,
        }
    }

    /// The same network in inference mode (batch norm uses running statistics, no gradients
    /// into its parameters) but able to pass gradients to its input on an autodiff device.
    pub fn frozen(self) -> Self {
        use burn::module::Module;
        match self {
            Classifier::Lenet(m) => Classifier::Lenet(Box::new(m.freeze())),
            Classifier::Madry(m) => Classifier::Madry(Box::new(m.freeze())),
            Classifier::SvhnVgg(m) => Classifier::SvhnVgg(Box::new(m.freeze())),
        }
    }

    /// The opposite of [`Classifier::frozen`]: parameters that take gradients again (to train
    /// a loaded checkpoint further).
    pub fn trainable(self) -> Self {
        use burn::module::Module;
        match self {
            Classifier::Lenet(m) => Classifier::Lenet(Box::new(m.unfreeze())),
            Classifier::Madry(m) => Classifier::Madry(Box::new(m.unfreeze())),
            Classifier::SvhnVgg(m) => Classifier::SvhnVgg(Box::new(m.unfreeze())),
        }
    }

    /// An inference copy without autodiff (for evaluation).
    pub fn valid(&self) -> Self {
        use burn::module::Module;
        match self {
            Classifier::Lenet(m) => Classifier::Lenet(Box::new(m.valid())),
            Classifier::Madry(m) => Classifier::Madry(Box::new(m.valid())),
            Classifier::SvhnVgg(m) => Classifier::SvhnVgg(Box::new(m.valid())),
        }
    }

    /// Moves the network to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        use burn::module::Module;
        match self {
            Classifier::Lenet(m) => Classifier::Lenet(Box::new(m.to_device(device))),
            Classifier::Madry(m) => Classifier::Madry(Box::new(m.to_device(device))),
            Classifier::SvhnVgg(m) => Classifier::SvhnVgg(Box::new(m.to_device(device))),
        }
    }
}

/// A trained denoiser of any supported architecture.
#[derive(Debug, Clone)]
pub enum Denoiser {
    /// Defed.
    Defed(Box<Defed>),
    /// BaseNet.
    Basenet(Box<BaseNet>),
}

impl Denoiser {
    /// The raw (unclamped) output; sides must be divisible by 4.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Denoiser::Defed(m) => m.forward(x),
            Denoiser::Basenet(m) => m.forward(x),
        }
    }

    /// The denoised image `clamp(D(x), 0, 1)`, after checking the shape.
    pub fn try_denoise(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        check_denoiser_input(x.dims(), self.channels())?;
        Ok(self.forward(x).clamp(0.0, 1.0))
    }

    /// The number of image channels it was built for.
    pub fn channels(&self) -> usize {
        match self {
            Denoiser::Defed(m) => m.head.l0.weight.dims()[1],
            Denoiser::Basenet(m) => m.head.l0.weight.dims()[1],
        }
    }

    /// Its architecture.
    pub fn architecture(&self) -> Architecture {
        match self {
            Denoiser::Defed(_) => Architecture::Defed,
            Denoiser::Basenet(_) => Architecture::Basenet,
        }
    }

    /// Moves the network to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        use burn::module::Module;
        match self {
            Denoiser::Defed(m) => Denoiser::Defed(Box::new(m.to_device(device))),
            Denoiser::Basenet(m) => Denoiser::Basenet(Box::new(m.to_device(device))),
        }
    }

    /// Inference mode, gradients still flowing to the input on an autodiff device.
    pub fn frozen(self) -> Self {
        use burn::module::Module;
        match self {
            Denoiser::Defed(m) => Denoiser::Defed(Box::new(m.freeze())),
            Denoiser::Basenet(m) => Denoiser::Basenet(Box::new(m.freeze())),
        }
    }

    /// The opposite of [`Denoiser::frozen`]: parameters that take gradients again (to train a
    /// loaded checkpoint further).
    pub fn trainable(self) -> Self {
        use burn::module::Module;
        match self {
            Denoiser::Defed(m) => Denoiser::Defed(Box::new(m.unfreeze())),
            Denoiser::Basenet(m) => Denoiser::Basenet(Box::new(m.unfreeze())),
        }
    }
}

/// Checks that a batch fits a denoiser: the right channel count and sides divisible by 4.
pub(crate) fn check_denoiser_input(dims: [usize; 4], channels: usize) -> Result<()> {
    let [_, c, h, w] = dims;
    if c != channels {
        return Err(Error::Shape(format!(
            "the denoiser takes {channels}-channel images, got {c} channels"
        )));
    }
    if h % 4 != 0 || w % 4 != 0 || h == 0 || w == 0 {
        return Err(Error::Shape(format!(
            "denoiser inputs need height and width divisible by 4 (two 2x down- and up-samplings), got {h}x{w}; pad or resize the images (e.g. to {}x{})",
            h.div_ceil(4) * 4,
            w.div_ceil(4) * 4
        )));
    }
    Ok(())
}
