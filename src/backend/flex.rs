//! Helpers shared by the CPU fast paths: whether a tensor is on `flex`, and moving values in
//! and out of flex tensors.

use burn::backend::flex::FlexTensor;
use burn::backend::{DType, TensorMetadata};
use burn::tensor::{Tensor, TensorData};

/// Whether a tensor lives on the `flex` CPU backend, where the SIMD kernels apply.
pub(crate) fn on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    use burn::backend::DispatchDevice;
    match x.device().as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(a) => matches!(a.clone().inner(), DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)] // only flex is compiled into the default build
        _ => false,
    }
}

/// f32 values of a flex tensor in row-major order, copying only when the layout needs it.
pub(crate) fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    let layout = t.layout();
    if layout.is_contiguous() && layout.start_offset() == 0 {
        let n = t.shape().num_elements();
        std::borrow::Cow::Borrowed(&t.storage::<f32>()[..n])
    } else {
        std::borrow::Cow::Owned(t.to_contiguous().storage::<f32>().to_vec())
    }
}

/// Whether every operand is f32, the one dtype the CPU kernels take.
pub(crate) fn all_f32(ts: &[&FlexTensor]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32)
}

pub(crate) fn flex_tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}
