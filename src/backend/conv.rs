//! Faster square (3x3, 5x5) stride-1 convolutions, as a burn backend extension.
//!
//! [`fast_conv`] is a drop-in for `burn::tensor::module::conv2d` with a 3x3 or 5x5 kernel,
//! stride 1, dilation 1 and one group. On the `flex` CPU backend it runs the SIMD kernels of
//! `backend::kernels` (forward, input gradient and weight gradient); on other devices
//! (the GPU backends) it is burn's own `conv2d`. Under autodiff a custom backward node calls the
//! same fast kernels, so models and training code are unchanged apart from which function the
//! layer calls: [`conv2d`] and [`conv_transpose2d`] take burn's modules (same parameters, same
//! checkpoints) and use the fast path whenever the shape allows. At inference,
//! `batchnorm::conv_bn_prelu` folds a following batch norm into the weights and runs PReLU in the
//! kernel's epilogue ([`FastConvBackend::fast_conv_prelu`]); there patchify layers (kernel =
//! stride, e.g. Defed's 2x2 stride-2 down- and up-sampling) run as 1x1 convolutions of data
//! rearranged space-to-depth or depth-to-space ([`Shuffle`]).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Flex, TensorMetadata, backend_extension};
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

use super::flex::{all_f32, flex_tensor, on_flex, values};
use super::kernels::affine_prelu_values;
use super::kernels::{self, Geometry};
use super::shuffle::{self, ShuffleBackend};

/// Backends that provide the square stride-1 convolution and its two gradients.
#[backend_extension(Flex, Autodiff)]
pub trait FastConvBackend: Backend {
    /// `conv2d` with a `[cout, cin, k, k]` kernel (k = 3 or 5), stride 1, the given zero
    /// padding, plus bias.
    fn fast_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self>;
    /// Gradient of [`fast_conv`](FastConvBackend::fast_conv) with respect to `x`.
    fn fast_conv_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self>;
    /// Gradient of [`fast_conv`](FastConvBackend::fast_conv) with respect to `bias`.
    fn fast_conv_bias_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// Gradient of [`fast_conv`](FastConvBackend::fast_conv) with respect to `weight`.
    fn fast_conv_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self>;
    /// [`fast_conv`](FastConvBackend::fast_conv) then PReLU with one slope per output channel
    /// (`alpha`, `[cout]`), applied in the kernel's epilogue, with the input or output
    /// rearranged as `shuffle` says (a patchify layer as a 1x1 convolution). Inference only:
    /// plain devices.
    fn fast_conv_prelu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        padding: [usize; 2],
        shuffle: Shuffle,
    ) -> FloatTensor<Self>;
}

/// How [`FastConvBackend::fast_conv_prelu`] rearranges data around its kernel: patchify layers
/// (kernel = stride = k, no padding) run as 1x1 convolutions of rearranged data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shuffle {
    /// The convolution as it is.
    None,
    /// The input goes through [`shuffle::space_to_depth`] first (a k x k stride-k convolution,
    /// weight `[cout, cin * k * k, 1, 1]`).
    SpaceToDepth(usize),
    /// The layer's `cout` channels are computed as `cout * k * k` (weight
    /// `[cout, k * k * cin, 1, 1]`, one `[cin]` row per channel and tap; bias and slopes per
    /// channel), then rearranged by [`shuffle::depth_to_space`] (a transposed k x k stride-k
    /// convolution).
    DepthToSpace(usize),
}

fn options(padding: [usize; 2]) -> ConvOptions<2> {
    ConvOptions::new([1, 1], padding, [1, 1], 1)
}

/// The geometry of a fast_conv call from the input and weight shapes.
fn geometry(x: &[usize], w: &[usize], padding: [usize; 2]) -> Geometry {
    Geometry {
        batch: x[0],
        cin: x[1],
        cout: w[0],
        h: x[2],
        w: x[3],
        pad_h: padding[0],
        pad_w: padding[1],
        k: w[2],
    }
}

/// The kernels' geometry for `x` and a square `weight` when they take this call: a supported
/// shape and every operand f32.
fn kernel_geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    other: &FlexTensor,
    padding: [usize; 2],
) -> Option<Geometry> {
    let g = geometry(&x.shape(), &weight.shape(), padding);
    let square = weight.shape()[2] == weight.shape()[3];
    (g.supported() && square && all_f32(&[x, weight, other])).then_some(g)
}

impl FastConvBackend for Flex {
    fn fast_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        let Some(g) = kernel_geometry(&x, &weight, &bias, padding) else {
            return Self::conv2d(x, weight, Some(bias), options(padding));
        };
        let out = kernels::conv(&g, &values(&x), &values(&weight), Some(&values(&bias)));
        flex_tensor(out, vec![g.batch, g.cout, g.ho(), g.wo()])
    }

    fn fast_conv_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        let Some(g) = kernel_geometry(&x, &weight, &grad, padding) else {
            return Self::conv2d_x_backward(x, weight, grad, options(padding));
        };
        let out = kernels::conv_input_grad(&g, &values(&grad), &values(&weight));
        flex_tensor(out, vec![g.batch, g.cin, g.h, g.w])
    }

    fn fast_conv_bias_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if grad.dtype() != DType::F32 {
            return Self::conv2d_bias_backward(x, bias, grad);
        }
        let shape = grad.shape();
        let out = kernels::bias_grad(shape[0], shape[1], &values(&grad));
        flex_tensor(out, vec![shape[1]])
    }

    fn fast_conv_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        let Some(g) = kernel_geometry(&x, &weight, &grad, padding) else {
            return Self::conv2d_weight_backward(x, weight, grad, options(padding));
        };
        let out = kernels::conv_weight_grad(&g, &values(&x), &values(&grad));
        flex_tensor(out, vec![g.cout, g.cin, g.k, g.k])
    }

    fn fast_conv_prelu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        padding: [usize; 2],
        shuffle: Shuffle,
    ) -> FloatTensor<Self> {
        match shuffle {
            Shuffle::None => {}
            Shuffle::SpaceToDepth(k) => {
                let xs = <Self as ShuffleBackend>::space_to_depth(x, k);
                return Self::fast_conv_prelu(xs, weight, bias, alpha, padding, Shuffle::None);
            }
            Shuffle::DepthToSpace(k) => {
                let kk = k * k;
                let ws = weight.shape().to_vec();
                let (cout, cin) = (ws[0], ws[1] / kk);
                let weight = flex_tensor(values(&weight).into_owned(), vec![cout * kk, cin, 1, 1]);
                let repeat = |t: &FlexTensor| -> Vec<f32> {
                    values(t)
                        .iter()
                        .flat_map(|&v| std::iter::repeat_n(v, kk))
                        .collect()
                };
                let bias = flex_tensor(repeat(&bias), vec![cout * kk]);
                let alpha = flex_tensor(repeat(&alpha), vec![cout * kk]);
                let y = Self::fast_conv_prelu(x, weight, bias, alpha, padding, Shuffle::None);
                return <Self as ShuffleBackend>::depth_to_space(y, k);
            }
        }
        let alpha = values(&alpha).into_owned();
        let Some(g) = kernel_geometry(&x, &weight, &bias, padding) else {
            let y = Self::conv2d(x, weight, Some(bias), options(padding));
            let shape = y.shape().to_vec();
            let (n, c) = (shape[0], shape[1]);
            let per = shape[2..].iter().product::<usize>().max(1);
            let v = affine_prelu_values(
                &values(&y),
                (n, c, per),
                &vec![1.0; c],
                &vec![0.0; c],
                &alpha,
            );
            return flex_tensor(v, shape);
        };
        let out = kernels::conv_prelu(
            &g,
            &values(&x),
            &values(&weight),
            Some(&values(&bias)),
            Some(&alpha),
        );
        flex_tensor(out, vec![g.batch, g.cout, g.ho(), g.wo()])
    }
}

/// The backward node: input, weight and bias gradients from the inner backend's kernels.
#[derive(Debug)]
struct FastConvGrad;

impl<B: Backend + FastConvBackend> Backward<B, 3> for FastConvGrad {
    type State = (
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
        [usize; 2],
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, bias, padding) = ops.state;
        if let Some(node) = node_x {
            let g = B::fast_conv_x_backward(x.clone(), weight.clone(), grad.clone(), padding);
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_w {
            let g = B::fast_conv_weight_backward(x.clone(), weight, grad.clone(), padding);
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, B::fast_conv_bias_backward(x, bias, grad));
        }
    }
}

impl<B: Backend + FastConvBackend, C: CheckpointStrategy> FastConvBackend for Autodiff<B, C> {
    fn fast_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        // The state keeps the input primitives themselves (no recomputation): the forward
        // pass has them anyway and they are what the gradients need.
        match FastConvGrad
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, w, b) = (
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                );
                let out = B::fast_conv(x.clone(), w.clone(), b.clone(), padding);
                prep.finish((x, w, b, padding), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fast_conv(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                padding,
            )),
        }
    }

    fn fast_conv_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, options(padding))
    }

    fn fast_conv_bias_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv2d_bias_backward(x, bias, grad)
    }

    fn fast_conv_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, options(padding))
    }

    fn fast_conv_prelu(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _bias: FloatTensor<Self>,
        _alpha: FloatTensor<Self>,
        _padding: [usize; 2],
        _shuffle: Shuffle,
    ) -> FloatTensor<Self> {
        // Never routed here: `batchnorm::conv_bn_prelu` fuses only on plain (inference) devices.
        unreachable!("fast_conv_prelu runs on plain (inference) devices only")
    }
}

/// Stride-1 convolution of `x` (`[n, cin, h, w]`) with `weight` (`[cout, cin, k, k]`),
/// `bias` (`[cout]`) and zero `padding`, through the fastest kernel the device has.
pub fn fast_conv(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    padding: [usize; 2],
) -> Tensor<4> {
    if !on_flex(&x) {
        return burn::tensor::module::conv2d(x, weight, Some(bias), options(padding));
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as FastConvBackend>::fast_conv(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        padding,
    ))
}

fn bias_or_zeros(bias: Option<Tensor<1>>, channels: usize, like: &Tensor<4>) -> Tensor<1> {
    bias.unwrap_or_else(|| Tensor::zeros([channels], &like.device()))
}

/// A layer in the fast kernels' form: the weights of an equivalent stride-1 forward
/// convolution (`[cout, cin, k, k]`), its bias and its zero padding.
pub(crate) struct FastForm {
    pub(crate) weight: Tensor<4>,
    pub(crate) bias: Tensor<1>,
    pub(crate) padding: [usize; 2],
    pub(crate) shuffle: Shuffle,
}

/// A convolution's padding as `[vertical, horizontal]` when it is the same on both sides.
fn symmetric_padding(conv: &Conv2d) -> Option<[usize; 2]> {
    use burn::nn::PaddingConfig2d;
    let [kh, kw] = conv.kernel_size;
    match conv.padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Same if kh % 2 == 1 && kw % 2 == 1 => Some([kh / 2, kw / 2]),
        PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => Some([t, l]),
        _ => None,
    }
}

/// `conv` as a [`FastForm`] when it is a 3x3 or 5x5, stride-1, undilated, ungrouped
/// convolution with symmetric padding below the kernel size.
pub(crate) fn conv_form(conv: &Conv2d, x: &Tensor<4>) -> Option<FastForm> {
    let [kh, kw] = conv.kernel_size;
    let padding = symmetric_padding(conv)?;
    if !((kh == 3 || kh == 5)
        && kh == kw
        && padding[0] < kh
        && padding[1] < kh
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1)
    {
        return None;
    }
    let weight = conv.weight.val();
    let cout = weight.dims()[0];
    let bias = bias_or_zeros(conv.bias.as_ref().map(|b| b.val()), cout, x);
    Some(FastForm {
        weight,
        bias,
        padding,
        shuffle: Shuffle::None,
    })
}

/// A transposed convolution as a [`FastForm`] when it is 3x3 or 5x5, stride 1, undilated,
/// ungrouped, with no output padding: such a layer is a convolution with the kernel flipped and
/// its channel axes swapped, and padding `k - 1 - padding`.
pub(crate) fn conv_transpose_form(conv: &ConvTranspose2d, x: &Tensor<4>) -> Option<FastForm> {
    let [ph, pw] = conv.padding;
    let [kh, kw] = conv.kernel_size;
    if !((kh == 3 || kh == 5)
        && kh == kw
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.padding_out == [0, 0]
        && ph < kh
        && pw < kh)
    {
        return None;
    }
    let weight = conv.weight.val().swap_dims(0, 1).flip([2, 3]);
    let cout = weight.dims()[0];
    let bias = bias_or_zeros(conv.bias.as_ref().map(|b| b.val()), cout, x);
    Some(FastForm {
        weight,
        bias,
        padding: [kh - 1 - ph, kw - 1 - pw],
        shuffle: Shuffle::None,
    })
}

/// A patchify convolution with a square kernel of 2 or more (see [`patchify`]) as a 1x1
/// [`FastForm`] of its input rearranged space-to-depth (the weight's values, reshaped).
/// Only for [`fast_conv_prelu`] (inference).
pub(crate) fn patch_form(conv: &Conv2d, x: &Tensor<4>) -> Option<FastForm> {
    let [kh, kw] = conv.kernel_size;
    let padding = symmetric_padding(conv);
    if !(kh == kw
        && kh >= 2
        && patchify(
            conv.kernel_size,
            conv.stride,
            padding,
            conv.dilation,
            conv.groups,
            x,
        ))
    {
        return None;
    }
    let weight = conv.weight.val();
    let [cout, cin, _, _] = weight.dims();
    let bias = bias_or_zeros(conv.bias.as_ref().map(|b| b.val()), cout, x);
    Some(FastForm {
        weight: weight.reshape([cout, cin * kh * kw, 1, 1]),
        bias,
        padding: [0, 0],
        shuffle: Shuffle::SpaceToDepth(kh),
    })
}

/// The transposed patchify convolution (square kernel of 2 or more, stride = kernel, no
/// padding) as a 1x1 [`FastForm`] whose outputs are rearranged depth-to-space: weight
/// `[cin, cout, k, k]` laid out as `[cout, k * k * cin, 1, 1]`. Only for [`fast_conv_prelu`]
/// (inference).
pub(crate) fn patch_transpose_form(conv: &ConvTranspose2d, x: &Tensor<4>) -> Option<FastForm> {
    let [kh, kw] = conv.kernel_size;
    if !(kh == kw && kh >= 2 && transposed_patchify(conv)) {
        return None;
    }
    let weight = conv.weight.val();
    let [cin, cout, _, _] = weight.dims();
    let bias = bias_or_zeros(conv.bias.as_ref().map(|b| b.val()), cout, x);
    Some(FastForm {
        weight: weight
            .permute([1, 2, 3, 0])
            .reshape([cout, kh * kw * cin, 1, 1]),
        bias,
        padding: [0, 0],
        shuffle: Shuffle::DepthToSpace(kh),
    })
}

/// `prelu(conv(x))` for a layer in [`FastForm`] with one PReLU slope per output channel
/// (`[cout]`), fused on `flex`. Inference only: `x` and the form must not be on an autodiff
/// device (callers check).
pub(crate) fn fast_conv_prelu(x: Tensor<4>, form: FastForm, alpha: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(
        <burn::backend::Dispatch as FastConvBackend>::fast_conv_prelu(
            x.into_dispatch(),
            form.weight.into_dispatch(),
            form.bias.into_dispatch(),
            alpha.into_dispatch(),
            form.padding,
            form.shuffle,
        ),
    )
}

/// `conv.forward(x)`, through [`fast_conv`] when the layer is a 3x3 or 5x5, stride-1,
/// undilated, ungrouped convolution with symmetric padding below the kernel size; through one
/// matrix product for patchify layers under autodiff; else burn's own `forward`.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if let Some(f) = conv_form(conv, &x) {
        return fast_conv(x, f.weight, f.bias, f.padding);
    }
    // Under autodiff only: burn's forward is as fast, its backward is what is slow.
    if x.device().is_autodiff()
        && patchify(
            conv.kernel_size,
            conv.stride,
            symmetric_padding(conv),
            conv.dilation,
            conv.groups,
            &x,
        )
    {
        patch_conv(conv, x)
    } else {
        conv.forward(x)
    }
}

/// Whether a layer is a "patchify" convolution: kernel = stride, no padding, no dilation, one
/// group, and the input divides into whole patches (1x1 convolutions included).
fn patchify(
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: Option<[usize; 2]>,
    dilation: [usize; 2],
    groups: usize,
    x: &Tensor<4>,
) -> bool {
    let [_, _, h, w] = x.dims();
    kernel == stride
        && padding == Some([0, 0])
        && dilation == [1, 1]
        && groups == 1
        && h % kernel[0] == 0
        && w % kernel[1] == 0
}

/// A patchify convolution as one batched matrix product over space-to-depth patches, whose
/// forward and backward passes are all matrix products (burn's default convolution gradients
/// are much slower for these shapes).
fn patch_conv(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let [kh, kw] = conv.kernel_size;
    let (ho, wo) = (h / kh, w / kw);
    let weight = conv.weight.val();
    let cout = weight.dims()[0];
    let patches: Tensor<3> = if kh * kw == 1 {
        x.reshape([n, c, h * w])
    } else if kh == kw {
        shuffle::space_to_depth(x, kh).reshape([n, c * kh * kw, ho * wo])
    } else {
        x.reshape([n, c, ho, kh, wo, kw])
            .permute([0, 1, 3, 5, 2, 4])
            .reshape([n, c * kh * kw, ho * wo])
    };
    let wm: Tensor<3> = weight
        .reshape([1, cout, c * kh * kw])
        .expand([n, cout, c * kh * kw]);
    let mut y = wm.matmul(patches);
    if let Some(b) = &conv.bias {
        y = y + b.val().reshape([1, cout, 1]);
    }
    y.reshape([n, cout, ho, wo])
}

/// Whether a transposed convolution is the transpose of a patchify one: kernel = stride, no
/// padding (in or out), no dilation, one group.
fn transposed_patchify(conv: &ConvTranspose2d) -> bool {
    conv.kernel_size == conv.stride
        && conv.padding == [0, 0]
        && conv.padding_out == [0, 0]
        && conv.dilation == [1, 1]
        && conv.groups == 1
}

/// The transposed patchify convolution (kernel = stride, no padding): a matrix product then
/// depth-to-space.
fn patch_conv_transpose(conv: &ConvTranspose2d, x: Tensor<4>) -> Tensor<4> {
    let [n, cin, h, w] = x.dims();
    let [kh, kw] = conv.kernel_size;
    let weight = conv.weight.val();
    let cout = weight.dims()[1];
    let wm: Tensor<3> = weight
        .reshape([cin, cout * kh * kw])
        .transpose()
        .reshape([1, cout * kh * kw, cin])
        .expand([n, cout * kh * kw, cin]);
    let y = wm.matmul(x.reshape([n, cin, h * w]));
    let y: Tensor<4> = if kh * kw == 1 {
        y.reshape([n, cout, h, w])
    } else if kh == kw {
        shuffle::depth_to_space(y.reshape([n, cout * kh * kw, h, w]), kh)
    } else {
        y.reshape([n, cout, kh, kw, h, w])
            .permute([0, 1, 4, 2, 5, 3])
            .reshape([n, cout, h * kh, w * kw])
    };
    match &conv.bias {
        Some(b) => y + b.val().reshape([1, cout, 1, 1]),
        None => y,
    }
}

/// `conv.forward(x)` for a transposed convolution, through [`fast_conv`] when
/// `conv_transpose_form` applies, as one matrix product for patchify layers under autodiff,
/// else burn's own `forward`.
pub fn conv_transpose2d(conv: &ConvTranspose2d, x: Tensor<4>) -> Tensor<4> {
    if let Some(f) = conv_transpose_form(conv, &x) {
        fast_conv(x, f.weight, f.bias, f.padding)
    } else if x.device().is_autodiff() && transposed_patchify(conv) {
        patch_conv_transpose(conv, x)
    } else {
        conv.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
    use burn::tensor::Distribution;

    /// Largest absolute difference, relative to the reference's largest magnitude (>= 1).
    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// The fast path equals burn's reference convolution, forward and backward, to 1e-5.
    #[test]
    fn fast_path_equals_reference() {
        let device = crate::backend::autodiff_device();
        for (k, cin, cout, hw, pad) in [
            (3, 16, 16, 28, 1),
            (3, 1, 16, 14, 1),
            (3, 32, 32, 7, 0),
            (3, 3, 5, 9, 2),
            (5, 1, 6, 28, 0),
            (5, 6, 16, 12, 3),
        ] {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(&device);
            let x =
                Tensor::<4>::random([3, cin, hw, hw], Distribution::Uniform(-1.0, 1.0), &device)
                    .require_grad();
            let fast = conv2d(&conv, x.clone());
            let reference = conv.forward(x.clone());
            assert!(max_diff(fast.clone(), reference.clone()) < 1e-5);
            let probe = Tensor::<4>::random(fast.dims(), Distribution::Default, &device);
            let gf = (fast * probe.clone()).sum().backward();
            let gr = (reference * probe).sum().backward();
            let dx = max_diff(x.grad(&gf).unwrap(), x.grad(&gr).unwrap());
            let dw = max_diff(
                conv.weight.grad(&gf).unwrap(),
                conv.weight.grad(&gr).unwrap(),
            );
            let bias = conv.bias.as_ref().unwrap();
            let db = max_diff(
                bias.grad(&gf).unwrap().reshape([1, 1, 1, cout]),
                bias.grad(&gr).unwrap().reshape([1, 1, 1, cout]),
            );
            assert!(
                dx < 1e-5 && dw < 1e-4 && db < 1e-4,
                "{cin}->{cout}: {dx} {dw} {db}"
            );

            let convt = ConvTranspose2dConfig::new([cin, cout], [k, k])
                .with_padding([pad.min(1), pad.min(1)])
                .init(&device);
            let fast = conv_transpose2d(&convt, x.clone());
            let reference = convt.forward(x.clone());
            assert!(max_diff(fast.clone(), reference.clone()) < 1e-5);
            let gf = fast.sum().backward();
            let gr = reference.sum().backward();
            let dx = max_diff(x.grad(&gf).unwrap(), x.grad(&gr).unwrap());
            let dw = max_diff(
                convt.weight.grad(&gf).unwrap(),
                convt.weight.grad(&gr).unwrap(),
            );
            assert!(
                dx < 1e-5 && dw < 1e-4,
                "transposed {cin}->{cout}: {dx} {dw}"
            );
        }
    }

    /// Patchify convolutions (2x2 stride 2, 1x1) equal burn's, forward and backward.
    #[test]
    fn patch_paths_equal_reference() {
        let device = crate::backend::autodiff_device();
        for (k, cin, cout) in [(2, 16, 32), (1, 16, 16), (3, 2, 5)] {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([k, k])
                .init(&device);
            let convt = ConvTranspose2dConfig::new([cin, cout], [k, k])
                .with_stride([k, k])
                .init(&device);
            let x =
                Tensor::<4>::random([2, cin, 6, 12], Distribution::Default, &device).require_grad();
            for (fast, reference, w) in [
                (
                    conv2d(&conv, x.clone()),
                    conv.forward(x.clone()),
                    conv.weight.clone(),
                ),
                (
                    conv_transpose2d(&convt, x.clone()),
                    convt.forward(x.clone()),
                    convt.weight.clone(),
                ),
            ] {
                assert_eq!(fast.dims(), reference.dims());
                assert!(max_diff(fast.clone(), reference.clone()) < 1e-5);
                let probe = Tensor::<4>::random(fast.dims(), Distribution::Default, &device);
                let gf = (fast * probe.clone()).sum().backward();
                let gr = (reference * probe).sum().backward();
                assert!(max_diff(x.grad(&gf).unwrap(), x.grad(&gr).unwrap()) < 1e-5);
                assert!(max_diff(w.grad(&gf).unwrap(), w.grad(&gr).unwrap()) < 1e-5);
            }
        }
    }

    #[test]
    fn other_shapes_fall_back() {
        let device = crate::backend::default_device();
        let conv = Conv2dConfig::new([2, 4], [2, 2])
            .with_stride([2, 2])
            .init(&device);
        let x = Tensor::<4>::random([1, 2, 8, 8], Distribution::Default, &device);
        let diff = max_diff(conv2d(&conv, x.clone()), conv.forward(x));
        assert!(diff < 1e-6, "{diff}");
    }
}
