//! BaseNet, the plain encoder-decoder denoiser used as the ablation without edge features.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PRelu, PReluConfig};
use burn::tensor::Tensor;

use super::blocks::{Cbp, CbpT};
use crate::backend::Device;
use crate::backend::batchnorm::{conv_bn_prelu, conv_transpose_bn_prelu};

/// A `CBP` wrapped in a module with one field `conv` (the original's `body.N.conv.*`).
#[derive(Module, Debug)]
pub(crate) struct CbpWrap {
    /// The wrapped block.
    pub conv: Cbp,
}

/// A `CBP` with a transposed convolution, wrapped like [`CbpWrap`].
#[derive(Module, Debug)]
pub(crate) struct CbpTWrap {
    /// The wrapped block.
    pub conv: CbpT,
}

/// The original's flat `body` sequence; field `lN` is `body.N`.
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub(crate) struct BaseBody {
    pub l0: CbpWrap,
    pub l1: Conv2d,
    pub l2: BatchNorm,
    pub l3: PRelu,
    pub l4: CbpWrap,
    pub l5: Conv2d,
    pub l6: BatchNorm,
    pub l7: PRelu,
    pub l8: ConvTranspose2d,
    pub l9: BatchNorm,
    pub l10: PRelu,
    pub l11: CbpTWrap,
    pub l12: ConvTranspose2d,
    pub l13: BatchNorm,
    pub l14: PRelu,
    pub l15: CbpTWrap,
}

/// The BaseNet denoiser for `C`-channel images whose sides are divisible by 4.
#[derive(Module, Debug)]
pub struct BaseNet {
    /// `CBP(C -> 16)`.
    pub head: Cbp,
    /// Encoder and decoder.
    pub(crate) body: BaseBody,
    /// `ConvTranspose 3x3 (16 -> C) + BN + PReLU`.
    pub tail: CbpT,
}

fn down(cin: usize, cout: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [2, 2])
        .with_stride([2, 2])
        .init(device)
}

fn up(cin: usize, cout: usize, device: &Device) -> ConvTranspose2d {
    ConvTranspose2dConfig::new([cin, cout], [2, 2])
        .with_stride([2, 2])
        .init(device)
}

impl BaseNet {
    /// A freshly initialised BaseNet for `channels`-channel images.
    pub fn new(channels: usize, device: &Device) -> Self {
        let bn = |c| BatchNormConfig::new(c).init(device);
        let act = || PReluConfig::new().init(device);
        BaseNet {
            head: Cbp::k3(channels, 16, device),
            body: BaseBody {
                l0: CbpWrap {
                    conv: Cbp::k3(16, 16, device),
                },
                l1: down(16, 32, device),
                l2: bn(32),
                l3: act(),
                l4: CbpWrap {
                    conv: Cbp::k3(32, 32, device),
                },
                l5: down(32, 32, device),
                l6: bn(32),
                l7: act(),
                l8: up(32, 32, device),
                l9: bn(32),
                l10: act(),
                l11: CbpTWrap {
                    conv: CbpT::k3(32, 32, device),
                },
                l12: up(32, 16, device),
                l13: bn(16),
                l14: act(),
                l15: CbpTWrap {
                    conv: CbpT::k3(16, 16, device),
                },
            },
            tail: CbpT::k3(16, channels, device),
        }
    }

    /// The raw (unclamped) denoiser output.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b = &self.body;
        let h = self.head.forward(x);
        let h = b.l0.conv.forward(h);
        let h = conv_bn_prelu(&b.l1, &b.l2, &b.l3, h);
        let h = b.l4.conv.forward(h);
        let h = conv_bn_prelu(&b.l5, &b.l6, &b.l7, h);
        let h = conv_transpose_bn_prelu(&b.l8, &b.l9, &b.l10, h);
        let h = b.l11.conv.forward(h);
        let h = conv_transpose_bn_prelu(&b.l12, &b.l13, &b.l14, h);
        let h = b.l15.conv.forward(h);
        self.tail.forward(h)
    }
}
