//! Defed, the edge-feature-enhanced denoiser (the original's class `ERN`).

use burn::module::Module;
use burn::tensor::Tensor;

use super::blocks::{Cbp, CbpT, EfeDown, EfeUp, Skip};
use super::filters::EdgeMethod;
use crate::backend::Device;

/// The Defed denoiser for `C`-channel images whose sides are divisible by 4.
#[derive(Module, Debug)]
pub struct Defed {
    /// Residual path from the input to the output.
    pub skip1: Skip,
    /// `CBP(C -> 16)`.
    pub head: Cbp,
    /// Residual over the first EFE level.
    pub skip2: Skip,
    /// Encoder EFE block at full resolution.
    pub en_efe_1: EfeDown,
    /// `Conv 2x2/2 (16 -> 32)`.
    pub down1: Cbp,
    /// Residual over the second EFE level.
    pub skip3: Skip,
    /// Encoder EFE block at half resolution.
    pub en_efe_2: EfeDown,
    /// `Conv 2x2/2 (32 -> 32)`.
    pub down2: Cbp,
    /// `ConvTranspose 2x2/2 (32 -> 32)`.
    pub up2: CbpT,
    /// Decoder EFE block at half resolution.
    pub de_efe_2: EfeUp,
    /// `ConvTranspose 2x2/2 (32 -> 16)`.
    pub up1: CbpT,
    /// Decoder EFE block at full resolution.
    pub de_efe_1: EfeUp,
    /// `ConvTranspose 3x3 (16 -> C)`.
    pub tail: CbpT,
}

/// Names of the intermediate activations [`Defed::forward_activations`] returns, in order.
pub const DEFED_ACTIVATIONS: [&str; 13] = [
    "skip1", "head", "skip2", "en_efe_1", "down1", "skip3", "en_efe_2", "down2", "up2", "de_efe_2",
    "up1", "de_efe_1", "tail",
];

impl Defed {
    /// A freshly initialised Defed for `channels`-channel images.
    pub fn new(channels: usize, edge: EdgeMethod, device: &Device) -> Self {
        Defed {
            skip1: Skip::new(channels, channels, 16, 3, device),
            head: Cbp::k3(channels, 16, device),
            skip2: Skip::new(16, 16, 16, 2, device),
            en_efe_1: EfeDown::new(16, 16, edge, device),
            down1: Cbp::down(16, 32, device),
            skip3: Skip::new(32, 32, 32, 1, device),
            en_efe_2: EfeDown::new(32, 32, edge, device),
            down2: Cbp::down(32, 32, device),
            up2: CbpT::up(32, 32, device),
            de_efe_2: EfeUp::new(32, 32, edge, device),
            up1: CbpT::up(32, 16, device),
            de_efe_1: EfeUp::new(16, 16, edge, device),
            tail: CbpT::k3(16, channels, device),
        }
    }

    /// The raw (unclamped) denoiser output. Sides must be divisible by 4; use
    /// [`Denoiser::try_denoise`](super::Denoiser::try_denoise) for a checked call.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_inner(x, &mut |_, _| {})
    }

    /// The forward pass, also returning every named module output (see [`DEFED_ACTIVATIONS`]).
    pub fn forward_activations(&self, x: Tensor<4>) -> (Tensor<4>, Vec<(&'static str, Tensor<4>)>) {
        let mut acts = Vec::new();
        let out = self.forward_inner(x, &mut |name, t: &Tensor<4>| acts.push((name, t.clone())));
        (out, acts)
    }

    fn forward_inner(
        &self,
        x: Tensor<4>,
        record: &mut dyn FnMut(&'static str, &Tensor<4>),
    ) -> Tensor<4> {
        let mut tap = |name: &'static str, t: Tensor<4>| {
            record(name, &t);
            t
        };
        let s1 = tap("skip1", self.skip1.forward(x.clone()));
        let h = tap("head", self.head.forward(x));
        let s2 = tap("skip2", self.skip2.forward(h.clone()));
        let h = tap("en_efe_1", self.en_efe_1.forward(h));
        let h = tap("down1", self.down1.forward(h));
        let s3 = tap("skip3", self.skip3.forward(h.clone()));
        let h = tap("en_efe_2", self.en_efe_2.forward(h));
        let h = tap("down2", self.down2.forward(h));
        let h = tap("up2", self.up2.forward(h));
        let h = tap("de_efe_2", self.de_efe_2.forward(h)) + s3;
        let h = tap("up1", self.up1.forward(h));
        let h = tap("de_efe_1", self.de_efe_1.forward(h)) + s2;
        tap("tail", self.tail.forward(h)) + s1
    }
}
