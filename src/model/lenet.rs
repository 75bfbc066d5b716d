//! LeNet-5, the original's MNIST classifier (99.09% on the test split).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::backend::Device;
use crate::backend::conv;
use crate::backend::linear::linear;
use crate::backend::pool::relu_max_pool2;

/// LeNet-5 for 1 x 28 x 28 images, 10 classes.
#[derive(Module, Debug)]
pub struct LeNet {
    /// Conv 5x5, 1 -> 6.
    pub conv1: Conv2d,
    /// Conv 5x5, 6 -> 16.
    pub conv2: Conv2d,
    /// Linear 256 -> 120.
    pub fc1: Linear,
    /// Linear 120 -> 84.
    pub fc2: Linear,
    /// Linear 84 -> 10.
    pub fc3: Linear,
    pool: MaxPool2d,
}

impl LeNet {
    /// A freshly initialised LeNet-5.
    pub fn new(device: &Device) -> Self {
        LeNet {
            conv1: Conv2dConfig::new([1, 6], [5, 5]).init(device),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            fc1: LinearConfig::new(256, 120).init(device),
            fc2: LinearConfig::new(120, 84).init(device),
            fc3: LinearConfig::new(84, super::CLASSES).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    /// Logits for a batch of `N x 1 x 28 x 28` images.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let pool = |x| self.pool.forward(relu(x));
        let h = relu_max_pool2(conv::conv2d(&self.conv1, x), pool);
        let h = relu_max_pool2(conv::conv2d(&self.conv2, h), pool);
        let h: Tensor<2> = h.flatten(1, 3);
        let h = relu(linear(&self.fc1, h));
        let h = relu(linear(&self.fc2, h));
        linear(&self.fc3, h)
    }
}
