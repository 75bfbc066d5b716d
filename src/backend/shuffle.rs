//! Space-to-depth and depth-to-space as a burn backend extension with their gradients, so that
//! patchify convolutions (kernel = stride, e.g. Defed's 2x2 stride-2 layers) become 1x1
//! products without burn's generic strided copies (a permute and the copy behind the reshape
//! after it, forward and backward).
//!
//! Both are permutations of the same values, so each is the other's adjoint: the backward of
//! one is the other applied to the output gradient. On devices other than `flex` the
//! high-level functions are burn's reshape and permute.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Flex, TensorMetadata, backend_extension};
use burn::tensor::Tensor;

use super::flex::{flex_tensor, on_flex, values};
use super::kernels;

/// Backends with the two rearrangements (see [`space_to_depth`] and [`depth_to_space`]).
#[backend_extension(Flex, Autodiff)]
pub trait ShuffleBackend: Backend {
    /// `[n, c, h, w]` to `[n, c * k * k, h / k, w / k]` (see [`space_to_depth`]).
    fn space_to_depth(x: FloatTensor<Self>, k: usize) -> FloatTensor<Self>;
    /// `[n, c * k * k, h, w]` to `[n, c, h * k, w * k]` (see [`depth_to_space`]).
    fn depth_to_space(x: FloatTensor<Self>, k: usize) -> FloatTensor<Self>;
}

fn dims4(x: &FloatTensor<Flex>) -> [usize; 4] {
    let s = x.shape();
    [s[0], s[1], s[2], s[3]]
}

impl ShuffleBackend for Flex {
    fn space_to_depth(x: FloatTensor<Self>, k: usize) -> FloatTensor<Self> {
        let [n, c, h, w] = dims4(&x);
        let out = kernels::space_to_depth(&values(&x), [n, c, h, w], k);
        flex_tensor(out, vec![n, c * k * k, h / k, w / k])
    }

    fn depth_to_space(x: FloatTensor<Self>, k: usize) -> FloatTensor<Self> {
        let [n, c, h, w] = dims4(&x);
        let out = kernels::depth_to_space(&values(&x), [n, c, h, w], k);
        flex_tensor(out, vec![n, c / (k * k), h * k, w * k])
    }
}

/// The backward node of space-to-depth (`inverse: false`) or depth-to-space (`inverse: true`).
#[derive(Debug)]
struct ShuffleGrad {
    inverse: bool,
}

impl ShuffleGrad {
    fn apply<B: ShuffleBackend>(inverse: bool, x: FloatTensor<B>, k: usize) -> FloatTensor<B> {
        if inverse {
            B::depth_to_space(x, k)
        } else {
            B::space_to_depth(x, k)
        }
    }

    /// Runs the rearrangement on the inner backend and records this node.
    fn track<B: Backend + ShuffleBackend, C: CheckpointStrategy>(
        self,
        x: FloatTensor<Autodiff<B, C>>,
        k: usize,
    ) -> FloatTensor<Autodiff<B, C>> {
        let inverse = self.inverse;
        match self.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                prep.finish(k, Self::apply::<B>(inverse, x.into_primitive(), k))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Self::apply::<B>(inverse, x.into_primitive(), k))
            }
        }
    }
}

impl<B: Backend + ShuffleBackend> Backward<B, 1> for ShuffleGrad {
    type State = usize;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let g = Self::apply::<B>(!self.inverse, grad, ops.state);
            grads.register::<B>(node.id, g);
        }
    }
}

impl<B: Backend + ShuffleBackend, C: CheckpointStrategy> ShuffleBackend for Autodiff<B, C> {
    fn space_to_depth(x: FloatTensor<Self>, k: usize) -> FloatTensor<Self> {
        ShuffleGrad { inverse: false }.track::<B, C>(x, k)
    }

    fn depth_to_space(x: FloatTensor<Self>, k: usize) -> FloatTensor<Self> {
        ShuffleGrad { inverse: true }.track::<B, C>(x, k)
    }
}

/// Space-to-depth: `x` (`[n, c, h, w]`, `h` and `w` multiples of `k`) as
/// `[n, c * k * k, h / k, w / k]`, channel `ci * k * k + a * k + b` holding
/// `x[.., ci, k * i + a, k * j + b]` (the order of a `[cout, cin, k, k]` weight's taps): a k x k
/// stride-k convolution of `x` is a 1x1 convolution of the result.
pub fn space_to_depth(x: Tensor<4>, k: usize) -> Tensor<4> {
    if !on_flex(&x) || x.dtype() != DType::F32 {
        return space_to_depth_burn(x, k);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as ShuffleBackend>::space_to_depth(
        x.into_dispatch(),
        k,
    ))
}

/// Depth-to-space, the inverse of [`space_to_depth`]: `[n, c * k * k, h, w]` as
/// `[n, c, h * k, w * k]`.
pub fn depth_to_space(x: Tensor<4>, k: usize) -> Tensor<4> {
    if !on_flex(&x) || x.dtype() != DType::F32 {
        return depth_to_space_burn(x, k);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as ShuffleBackend>::depth_to_space(
        x.into_dispatch(),
        k,
    ))
}

/// [`space_to_depth`] with burn's reshape and permute (other devices and dtypes).
fn space_to_depth_burn(x: Tensor<4>, k: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h / k, k, w / k, k])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([n, c * k * k, h / k, w / k])
}

/// [`depth_to_space`] with burn's reshape and permute.
fn depth_to_space_burn(x: Tensor<4>, k: usize) -> Tensor<4> {
    let [n, ckk, h, w] = x.dims();
    let c = ckk / (k * k);
    x.reshape([n, c, k, k, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([n, c, h * k, w * k])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// On the plain and the autodiff device, both rearrangements equal burn's reshape and
    /// permute, undo each other, and pass gradients back as burn's do.
    #[test]
    fn shuffles_and_gradients_equal_burn() {
        for device in [
            crate::backend::default_device(),
            crate::backend::autodiff_device(),
        ] {
            for k in [2, 3] {
                let mut x =
                    Tensor::<4>::random([2, 3, 2 * k, 3 * k], Distribution::Default, &device);
                if device.is_autodiff() {
                    x = x.require_grad();
                }
                let s = space_to_depth(x.clone(), k);
                let s_ref = space_to_depth_burn(x.clone(), k);
                assert_eq!(s.dims(), s_ref.dims());
                s.clone()
                    .into_data()
                    .assert_eq(&s_ref.clone().into_data(), true);
                depth_to_space(s.clone(), k)
                    .into_data()
                    .assert_eq(&x.clone().into_data(), true);
                if device.is_autodiff() {
                    let weight = Tensor::<4>::random(s.dims(), Distribution::Default, &device);
                    let g = (s * weight.clone()).sum().backward();
                    let g_ref = (s_ref * weight.clone()).sum().backward();
                    x.grad(&g)
                        .unwrap()
                        .into_data()
                        .assert_eq(&x.grad(&g_ref).unwrap().into_data(), true);
                    let z =
                        Tensor::<4>::random([2, 3 * k * k, 2, 3], Distribution::Default, &device)
                            .require_grad();
                    let w2 =
                        Tensor::<4>::random([2, 3, 2 * k, 3 * k], Distribution::Default, &device);
                    let g = (depth_to_space(z.clone(), k) * w2.clone()).sum().backward();
                    // depth-to-space's adjoint is space-to-depth.
                    z.grad(&g)
                        .unwrap()
                        .into_data()
                        .assert_eq(&space_to_depth_burn(w2, k).into_data(), true);
                }
            }
        }
    }
}
