//! The standard MNIST robustness network of Madry et al. (2018): two 5x5 "same" convolutions
//! (32 and 64 channels), each followed by ReLU and 2x2 max-pooling, a 1024-unit hidden layer and
//! 10 logits. Widths are parameters so smaller or larger capacities can be trained and loaded.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::backend::Device;
use crate::backend::conv;
use crate::backend::linear::linear;
use crate::backend::pool::relu_max_pool2;

/// Layer widths of a [`MadryCnn`]: first and second convolution channels, hidden units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MadryWidths {
    /// Channels of the first 5x5 convolution (32 in Madry et al.).
    pub conv1: usize,
    /// Channels of the second 5x5 convolution (64).
    pub conv2: usize,
    /// Hidden units of the fully connected layer (1024).
    pub hidden: usize,
}

impl Default for MadryWidths {
    fn default() -> Self {
        MadryWidths {
            conv1: 32,
            conv2: 64,
            hidden: 1024,
        }
    }
}

impl std::str::FromStr for MadryWidths {
    type Err = String;
    /// `32,64,1024` (conv1, conv2, hidden).
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<usize> = s
            .split([',', 'x', '/'])
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("widths must be three numbers like 32,64,1024, not {s:?}"))?;
        match parts[..] {
            [conv1, conv2, hidden] if conv1 > 0 && conv2 > 0 && hidden > 0 => Ok(MadryWidths {
                conv1,
                conv2,
                hidden,
            }),
            _ => Err(format!(
                "widths must be three positive numbers like 32,64,1024, not {s:?}"
            )),
        }
    }
}

/// The Madry et al. MNIST CNN for `C x 28 x 28` images, 10 classes.
#[derive(Module, Debug)]
pub struct MadryCnn {
    /// Conv 5x5, C -> conv1, padding 2.
    pub conv1: Conv2d,
    /// Conv 5x5, conv1 -> conv2, padding 2.
    pub conv2: Conv2d,
    /// Linear conv2 * 7 * 7 -> hidden.
    pub fc1: Linear,
    /// Linear hidden -> 10.
    pub fc2: Linear,
    pool: MaxPool2d,
}

impl MadryCnn {
    /// A freshly initialised network.
    pub fn new(channels: usize, widths: MadryWidths, device: &Device) -> Self {
        let same = PaddingConfig2d::Explicit(2, 2, 2, 2);
        MadryCnn {
            conv1: Conv2dConfig::new([channels, widths.conv1], [5, 5])
                .with_padding(same.clone())
                .init(device),
            conv2: Conv2dConfig::new([widths.conv1, widths.conv2], [5, 5])
                .with_padding(same)
                .init(device),
            fc1: LinearConfig::new(widths.conv2 * 49, widths.hidden).init(device),
            fc2: LinearConfig::new(widths.hidden, super::CLASSES).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    /// Its layer widths.
    pub fn widths(&self) -> MadryWidths {
        MadryWidths {
            conv1: self.conv1.weight.dims()[0],
            conv2: self.conv2.weight.dims()[0],
            hidden: self.fc2.weight.dims()[0],
        }
    }

    /// Input channels.
    pub fn channels(&self) -> usize {
        self.conv1.weight.dims()[1]
    }

    /// Logits for a batch of `N x C x 28 x 28` images.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let pool = |x| self.pool.forward(relu(x));
        let h = relu_max_pool2(conv::conv2d(&self.conv1, x), pool);
        let h = relu_max_pool2(conv::conv2d(&self.conv2, h), pool);
        let h: Tensor<2> = h.flatten(1, 3);
        let h = relu(linear(&self.fc1, h));
        linear(&self.fc2, h)
    }
}
