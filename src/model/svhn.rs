//! The original's VGG-style SVHN classifier (93.26% on SVHN test).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use super::blocks::conv3x3;
use crate::backend::Device;
use crate::backend::pool::relu_max_pool2;

/// The feature stack `[16, M, 32, M, 64, 64, M, 128, 128, M, 128, 128, M]`; field `lN` is
/// `features.N` of the original.
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub(crate) struct SvhnFeatures {
    pub l0: Conv2d,
    pub l1: BatchNorm,
    pub l4: Conv2d,
    pub l5: BatchNorm,
    pub l8: Conv2d,
    pub l9: BatchNorm,
    pub l11: Conv2d,
    pub l12: BatchNorm,
    pub l15: Conv2d,
    pub l16: BatchNorm,
    pub l18: Conv2d,
    pub l19: BatchNorm,
    pub l22: Conv2d,
    pub l23: BatchNorm,
    pub l25: Conv2d,
    pub l26: BatchNorm,
}

/// The VGG-style classifier for `C x 32 x 32` images, 10 classes.
#[derive(Module, Debug)]
pub struct SvhnNet {
    /// Convolutional features.
    pub(crate) features: SvhnFeatures,
    /// Linear 128 -> 10.
    pub classifier: Linear,
    pool: MaxPool2d,
}

impl SvhnNet {
    /// A freshly initialised network for `channels`-channel 32 x 32 images.
    pub fn new(channels: usize, device: &Device) -> Self {
        let bn = |c| BatchNormConfig::new(c).init(device);
        SvhnNet {
            features: SvhnFeatures {
                l0: conv3x3(channels, 16, device),
                l1: bn(16),
                l4: conv3x3(16, 32, device),
                l5: bn(32),
                l8: conv3x3(32, 64, device),
                l9: bn(64),
                l11: conv3x3(64, 64, device),
                l12: bn(64),
                l15: conv3x3(64, 128, device),
                l16: bn(128),
                l18: conv3x3(128, 128, device),
                l19: bn(128),
                l22: conv3x3(128, 128, device),
                l23: bn(128),
                l25: conv3x3(128, 128, device),
                l26: bn(128),
            },
            classifier: LinearConfig::new(128, super::CLASSES).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    /// Logits for a batch of `N x C x 32 x 32` images.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let f = &self.features;
        let cb = |c: &Conv2d, b: &BatchNorm, x| b.forward(c.forward(x));
        let cbr = |c: &Conv2d, b: &BatchNorm, x| relu(cb(c, b, x));
        // ReLU then 2x2 max-pooling, fused on the CPU.
        let pool = |x| relu_max_pool2(x, |x| self.pool.forward(relu(x)));
        let h = pool(cb(&f.l0, &f.l1, x));
        let h = pool(cb(&f.l4, &f.l5, h));
        let h = cbr(&f.l8, &f.l9, h);
        let h = pool(cb(&f.l11, &f.l12, h));
        let h = cbr(&f.l15, &f.l16, h);
        let h = pool(cb(&f.l18, &f.l19, h));
        let h = cbr(&f.l22, &f.l23, h);
        let h = pool(cb(&f.l25, &f.l26, h));
        let h: Tensor<2> = h.flatten(1, 3);
        self.classifier.forward(h)
    }
}
