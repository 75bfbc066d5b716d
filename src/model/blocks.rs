//! Building blocks shared by the denoisers.
//!
//! Field names `l0`, `l1`, ... stand for the indices of the original's `nn.Sequential`
//! containers, so that checkpoint keys translate mechanically (see
//! [`checkpoint`](super::checkpoint)).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PRelu, PReluConfig, PaddingConfig2d};
use burn::tensor::Tensor;

use super::filters::{self, EdgeMethod};
use crate::backend::Device;
use crate::backend::batchnorm::{conv_bn_prelu, conv_transpose_bn_prelu};
use crate::backend::conv;

/// A 3x3 convolution, stride 1, padding 1, with bias.
pub fn conv3x3(cin: usize, cout: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// `conv -> BatchNorm2d -> PReLU` with a forward convolution.
#[derive(Module, Debug)]
pub struct Cbp {
    /// The convolution (`.0` in the original).
    pub l0: Conv2d,
    /// Batch normalisation (`.1`).
    pub l1: BatchNorm,
    /// PReLU with one shared slope (`.2`).
    pub l2: PRelu,
}

impl Cbp {
    /// A block around the given convolution.
    pub fn with_conv(conv: Conv2d, cout: usize, device: &Device) -> Self {
        Cbp {
            l0: conv,
            l1: BatchNormConfig::new(cout).init(device),
            l2: PReluConfig::new().init(device),
        }
    }

    /// 3x3, stride 1, padding 1.
    pub fn k3(cin: usize, cout: usize, device: &Device) -> Self {
        Self::with_conv(conv3x3(cin, cout, device), cout, device)
    }

    /// 2x2, stride 2 (halves the spatial size).
    pub fn down(cin: usize, cout: usize, device: &Device) -> Self {
        let conv = Conv2dConfig::new([cin, cout], [2, 2])
            .with_stride([2, 2])
            .init(device);
        Self::with_conv(conv, cout, device)
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_bn_prelu(&self.l0, &self.l1, &self.l2, x)
    }
}

/// `conv-transpose -> BatchNorm2d -> PReLU`.
#[derive(Module, Debug)]
pub struct CbpT {
    /// The transposed convolution (`.0`).
    pub l0: ConvTranspose2d,
    /// Batch normalisation (`.1`).
    pub l1: BatchNorm,
    /// PReLU (`.2`).
    pub l2: PRelu,
}

impl CbpT {
    fn with_conv(conv: ConvTranspose2d, cout: usize, device: &Device) -> Self {
        CbpT {
            l0: conv,
            l1: BatchNormConfig::new(cout).init(device),
            l2: PReluConfig::new().init(device),
        }
    }

    /// 3x3 transposed convolution, stride 1, padding 1 (keeps the spatial size).
    pub fn k3(cin: usize, cout: usize, device: &Device) -> Self {
        let conv = ConvTranspose2dConfig::new([cin, cout], [3, 3])
            .with_padding([1, 1])
            .init(device);
        Self::with_conv(conv, cout, device)
    }

    /// 2x2 transposed convolution, stride 2 (doubles the spatial size).
    pub fn up(cin: usize, cout: usize, device: &Device) -> Self {
        let conv = ConvTranspose2dConfig::new([cin, cout], [2, 2])
            .with_stride([2, 2])
            .init(device);
        Self::with_conv(conv, cout, device)
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_transpose_bn_prelu(&self.l0, &self.l1, &self.l2, x)
    }
}

/// Residual chain of plain 3x3 convolutions: `chain(x) + x`.
#[derive(Module, Debug)]
pub struct Skip {
    /// `in->mid`, `2*(num-1)` of `mid->mid`, `mid->out`.
    pub layers: Vec<Conv2d>,
}

impl Skip {
    /// The original's `Skip(in, out, mid, num)`.
    pub fn new(cin: usize, cout: usize, mid: usize, num: usize, device: &Device) -> Self {
        let mut layers = vec![conv3x3(cin, mid, device)];
        for _ in 0..2 * (num - 1) {
            layers.push(conv3x3(mid, mid, device));
        }
        layers.push(conv3x3(mid, cout, device));
        Skip { layers }
    }

    /// Forward pass, residual included.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x.clone();
        for l in &self.layers {
            h = conv::conv2d(l, h);
        }
        h + x
    }
}

/// Edge-feature-enhancement block with forward 3x3 convolutions (encoder side).
#[derive(Module, Debug)]
pub struct EfeDown {
    /// Branch on the blurred input.
    pub blur_conv: Cbp,
    /// Branch on the edge map.
    pub edge_conv: Cbp,
    /// Branch on the input itself.
    pub orign_conv: Cbp,
    /// 1x1 fusion convolution.
    pub conv: Conv2d,
    #[module(skip)]
    edge: EdgeMethod,
}

impl EfeDown {
    /// A block mapping `cin` to `cout` channels.
    pub fn new(cin: usize, cout: usize, edge: EdgeMethod, device: &Device) -> Self {
        EfeDown {
            blur_conv: Cbp::k3(cin, cout, device),
            edge_conv: Cbp::k3(cin, cout, device),
            orign_conv: Cbp::k3(cin, cout, device),
            conv: Conv2dConfig::new([cout, cout], [1, 1]).init(device),
            edge,
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b = self.blur_conv.forward(filters::gaussian_blur(x.clone()));
        let e = self.edge_conv.forward(filters::edge(x.clone(), self.edge));
        let o = self.orign_conv.forward(x);
        conv::conv2d(&self.conv, b + e + o)
    }
}

/// Edge-feature-enhancement block with transposed 3x3 convolutions (decoder side).
#[derive(Module, Debug)]
pub struct EfeUp {
    /// Branch on the blurred input.
    pub blur_conv: CbpT,
    /// Branch on the edge map.
    pub edge_conv: CbpT,
    /// Branch on the input itself.
    pub orign_conv: CbpT,
    /// 1x1 fusion convolution.
    pub conv: Conv2d,
    #[module(skip)]
    edge: EdgeMethod,
}

impl EfeUp {
    /// A block mapping `cin` to `cout` channels.
    pub fn new(cin: usize, cout: usize, edge: EdgeMethod, device: &Device) -> Self {
        EfeUp {
            blur_conv: CbpT::k3(cin, cout, device),
            edge_conv: CbpT::k3(cin, cout, device),
            orign_conv: CbpT::k3(cin, cout, device),
            conv: Conv2dConfig::new([cout, cout], [1, 1]).init(device),
            edge,
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b = self.blur_conv.forward(filters::gaussian_blur(x.clone()));
        let e = self.edge_conv.forward(filters::edge(x.clone(), self.edge));
        let o = self.orign_conv.forward(x);
        conv::conv2d(&self.conv, b + e + o)
    }
}
