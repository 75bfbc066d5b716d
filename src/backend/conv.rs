//! A faster 3x3 stride-1 convolution, as a burn backend extension.
//!
//! [`conv3x3`] is a drop-in for `burn::tensor::module::conv2d` with a 3x3 kernel, stride 1,
//! dilation 1 and one group. On the `flex` CPU backend it runs the SIMD kernels of
//! [`kernels`](super::kernels) (forward, input gradient and weight gradient); on the GPU
//! backends it is burn's own `conv2d`. Under autodiff a custom backward node calls the same fast
//! kernels, so models and training code are unchanged apart from which function the layer
//! calls. [`FastConv2d`] and [`FastConvTranspose2d`] wrap burn's modules (same parameters, same
//! checkpoints) and take this path whenever the shape allows.

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
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

use super::kernels::{self, Geometry};

/// Backends that provide the 3x3 stride-1 convolution and its two gradients.
#[backend_extension(Flex, Autodiff, Cube: cfg(any(feature = "cuda", feature = "wgpu")))]
pub trait Conv3x3Backend: Backend {
    /// `conv2d` with a `[cout, cin, 3, 3]` kernel, stride 1, the given zero padding, plus bias.
    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self>;
    /// Gradient of [`conv3x3`](Conv3x3Backend::conv3x3) with respect to `x`.
    fn conv3x3_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self>;
    /// Gradient of [`conv3x3`](Conv3x3Backend::conv3x3) with respect to `weight`.
    fn conv3x3_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self>;
}

fn options(padding: [usize; 2]) -> ConvOptions<2> {
    ConvOptions::new([1, 1], padding, [1, 1], 1)
}

/// The geometry of a conv3x3 call from the input and weight shapes.
fn geometry(x: &[usize], w: &[usize], padding: [usize; 2]) -> Geometry {
    Geometry {
        batch: x[0],
        cin: x[1],
        cout: w[0],
        h: x[2],
        w: x[3],
        pad_h: padding[0],
        pad_w: padding[1],
    }
}

/// f32 values of a flex tensor in row-major order, copying only when the layout needs it.
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    let layout = t.layout();
    if layout.is_contiguous() && layout.start_offset() == 0 {
        let n = t.shape().num_elements();
        std::borrow::Cow::Borrowed(&t.storage::<f32>()[..n])
    } else {
        std::borrow::Cow::Owned(t.to_contiguous().storage::<f32>().to_vec())
    }
}

fn flex_tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn all_f32(ts: &[&FlexTensor]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32)
}

impl Conv3x3Backend for Flex {
    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        let g = geometry(&x.shape(), &weight.shape(), padding);
        if !g.supported() || !all_f32(&[&x, &weight, &bias]) {
            return Self::conv2d(x, weight, Some(bias), options(padding));
        }
        let out = kernels::conv3x3(&g, &values(&x), &values(&weight), Some(&values(&bias)));
        flex_tensor(out, vec![g.batch, g.cout, g.ho(), g.wo()])
    }

    fn conv3x3_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        let g = geometry(&x.shape(), &weight.shape(), padding);
        if !g.supported() || !all_f32(&[&x, &weight, &grad]) {
            return Self::conv2d_x_backward(x, weight, grad, options(padding));
        }
        let out = kernels::conv3x3_input_grad(&g, &values(&grad), &values(&weight));
        flex_tensor(out, vec![g.batch, g.cin, g.h, g.w])
    }

    fn conv3x3_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        let g = geometry(&x.shape(), &weight.shape(), padding);
        if !g.supported() || !all_f32(&[&x, &weight, &grad]) {
            return Self::conv2d_weight_backward(x, weight, grad, options(padding));
        }
        let out = kernels::conv3x3_weight_grad(&g, &values(&x), &values(&grad));
        flex_tensor(out, vec![g.cout, g.cin, 3, 3])
    }
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
impl Conv3x3Backend for burn::backend::Cube {
    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), options(padding))
    }

    fn conv3x3_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, options(padding))
    }

    fn conv3x3_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, options(padding))
    }
}

/// The backward node: input, weight and bias gradients from the inner backend's kernels.
#[derive(Debug)]
struct Conv3x3Grad;

impl<B: Backend + Conv3x3Backend> Backward<B, 3> for Conv3x3Grad {
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
            let g = B::conv3x3_x_backward(x.clone(), weight.clone(), grad.clone(), padding);
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_w {
            let g = B::conv3x3_weight_backward(x.clone(), weight, grad.clone(), padding);
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, B::conv2d_bias_backward(x, bias, grad));
        }
    }
}

impl<B: Backend + Conv3x3Backend, C: CheckpointStrategy> Conv3x3Backend for Autodiff<B, C> {
    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        // The state keeps the input primitives themselves (no recomputation): the forward
        // pass has them anyway and they are what the gradients need.
        match Conv3x3Grad
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
                let out = B::conv3x3(x.clone(), w.clone(), b.clone(), padding);
                prep.finish((x, w, b, padding), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                padding,
            )),
        }
    }

    fn conv3x3_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, options(padding))
    }

    fn conv3x3_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, options(padding))
    }
}

/// 3x3 stride-1 convolution of `x` (`[n, cin, h, w]`) with `weight` (`[cout, cin, 3, 3]`),
/// `bias` (`[cout]`) and zero `padding`, through the fastest kernel the device has.
pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, padding: [usize; 2]) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as Conv3x3Backend>::conv3x3(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        padding,
    ))
}

fn bias_or_zeros(bias: Option<Tensor<1>>, channels: usize, like: &Tensor<4>) -> Tensor<1> {
    bias.unwrap_or_else(|| Tensor::zeros([channels], &like.device()))
}

/// `conv.forward(x)`, through [`conv3x3`] when the layer is a 3x3, stride-1, undilated,
/// ungrouped convolution with symmetric padding of at most 2 (else burn's own `forward`).
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    use burn::nn::PaddingConfig2d;
    let padding = match conv.padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Same => Some([1, 1]),
        PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r && t <= 2 && l <= 2 => {
            Some([t, l])
        }
        PaddingConfig2d::Explicit(..) => None,
    };
    match padding {
        Some(p)
            if conv.kernel_size == [3, 3]
                && conv.stride == [1, 1]
                && conv.dilation == [1, 1]
                && conv.groups == 1 =>
        {
            let weight = conv.weight.val();
            let cout = weight.dims()[0];
            let bias = bias_or_zeros(conv.bias.as_ref().map(|b| b.val()), cout, &x);
            conv3x3(x, weight, bias, p)
        }
        _ => conv.forward(x),
    }
}

/// `conv.forward(x)` for a transposed convolution, through [`conv3x3`] when it is 3x3,
/// stride 1, undilated, ungrouped, with no output padding: such a layer is a convolution with
/// the kernel flipped and its channel axes swapped, and padding `2 - padding`.
pub fn conv_transpose2d(conv: &ConvTranspose2d, x: Tensor<4>) -> Tensor<4> {
    let [ph, pw] = conv.padding;
    if conv.kernel_size == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.padding_out == [0, 0]
        && ph <= 2
        && pw <= 2
    {
        let weight = conv.weight.val().swap_dims(0, 1).flip([2, 3]);
        let cout = weight.dims()[0];
        let bias = bias_or_zeros(conv.bias.as_ref().map(|b| b.val()), cout, &x);
        conv3x3(x, weight, bias, [2 - ph, 2 - pw])
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

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The fast path equals burn's reference convolution, forward and backward, to 1e-5.
    #[test]
    fn fast_path_equals_reference() {
        let device = crate::backend::autodiff_device();
        for (cin, cout, hw, pad) in [
            (16, 16, 28, 1),
            (1, 16, 14, 1),
            (32, 32, 7, 0),
            (3, 5, 9, 2),
        ] {
            let conv = Conv2dConfig::new([cin, cout], [3, 3])
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
            let db: f32 = (conv.bias.as_ref().unwrap().grad(&gf).unwrap()
                - conv.bias.as_ref().unwrap().grad(&gr).unwrap())
            .abs()
            .max()
            .into_scalar();
            assert!(
                dx < 1e-5 && dw < 1e-4 && db < 1e-4,
                "{cin}->{cout}: {dx} {dw} {db}"
            );

            let convt = ConvTranspose2dConfig::new([cin, cout], [3, 3])
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

    #[test]
    fn other_shapes_fall_back() {
        let device = crate::backend::default_device();
        let conv = Conv2dConfig::new([2, 4], [2, 2])
            .with_stride([2, 2])
            .init(&device);
        let x = Tensor::<4>::random([1, 2, 8, 8], Distribution::Default, &device);
        assert!(max_diff(conv2d(&conv, x.clone()), conv.forward(x)) == 0.0);
    }
}
