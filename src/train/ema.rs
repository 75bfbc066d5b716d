//! An exponential moving average of a model's weights (Polyak averaging), the model that
//! validation and the saved checkpoints use when a run averages: after every optimiser step
//! `avg = d avg + (1 - d) current`, with `d = min(decay, (1 + t) / (10 + t))` after `t` steps
//! so that the first steps are not dominated by the starting weights. Buffers such as batch
//! norm's running statistics are averaged the same way.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// The averaged weights of a model being trained.
///
/// ```
/// use defed::train::Ema;
/// let device = defed::autodiff_device();
/// let model = defed::model::LeNet::new(&device);
/// let mut average = Ema::new(&model, 0.995)?;
/// // ... an optimiser step changes `model`, then:
/// average.update(&model);
/// assert_eq!(average.updates, 1);
/// // `average.model` is what validation and the saved checkpoint use.
/// # Ok::<(), defed::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Ema<M> {
    /// The averaged model (no autodiff).
    pub model: M,
    /// The decay at full strength.
    pub decay: f64,
    /// Optimiser steps averaged so far.
    pub updates: u64,
}

/// Every float tensor of a module, flattened, in module order.
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().flatten::<1>(0, D - 1));
    }
}

/// Blends each tensor of the average with the current one at the same position.
struct Blend {
    current: std::vec::IntoIter<Tensor<1>>,
    keep: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let current = self
            .current
            .next()
            .expect("the average and the model are the same architecture");
        let keep = self.keep;
        param.map(move |avg| {
            let shape = avg.shape();
            avg.mul_scalar(keep) + current.reshape(shape).mul_scalar(1.0 - keep)
        })
    }
}

impl<M: Module> Ema<M> {
    /// Starts the average at `model`'s weights.
    pub fn new(model: &M, decay: f64) -> Result<Self> {
        if !(decay.is_finite() && (0.0..1.0).contains(&decay)) {
            return Err(Error::Invalid(format!(
                "the weight-average decay must be in [0, 1), not {decay}"
            )));
        }
        Ok(Ema {
            model: model.valid(),
            decay,
            updates: 0,
        })
    }

    /// The decay of the next update.
    pub fn current_decay(&self) -> f64 {
        let t = self.updates as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Folds the model's weights after an optimiser step into the average.
    pub fn update(&mut self, model: &M) {
        let mut collect = Collect(Vec::new());
        model.valid().visit(&mut collect);
        let mut blend = Blend {
            current: collect.0.into_iter(),
            keep: self.current_decay(),
        };
        self.model = self.model.clone().map(&mut blend);
        debug_assert!(blend.current.next().is_none());
        self.updates += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::autodiff_device;
    use crate::model::LeNet;
    use crate::model::checkpoint::collect_tensors;

    fn weights<M: Module>(m: &M) -> Vec<Vec<f32>> {
        collect_tensors(m).into_iter().map(|(_, _, v)| v).collect()
    }

    #[test]
    fn the_average_follows_the_warm_up_formula() {
        let device = autodiff_device();
        let a = LeNet::new(&device);
        let b = LeNet::new(&device);
        assert!(Ema::new(&a, 1.0).is_err() && Ema::new(&a, f64::NAN).is_err());
        let mut ema = Ema::new(&a, 0.99).unwrap();
        // Step 0 keeps 1/10 of the start, step 1 keeps 2/11 of that.
        assert!((ema.current_decay() - 0.1).abs() < 1e-12);
        ema.update(&b);
        ema.update(&b);
        assert_eq!(ema.updates, 2);
        let keep = 0.1 * 2.0 / 11.0;
        let (wa, wb, we) = (weights(&a), weights(&b), weights(&ema.model));
        assert_eq!(we.len(), wa.len());
        for ((ta, tb), te) in wa.iter().zip(&wb).zip(&we) {
            for ((x, y), z) in ta.iter().zip(tb).zip(te) {
                let want = keep * *x as f64 + (1.0 - keep) * *y as f64;
                assert!((want - *z as f64).abs() < 1e-5, "{want} vs {z}");
            }
        }
        // The decay reaches its ceiling once (1 + t) / (10 + t) exceeds it.
        ema.updates = 10_000;
        assert_eq!(ema.current_decay(), 0.99);
    }
}
