//! The performance workloads, shared by `defed bench` and `cargo bench --bench workloads`.
//!
//! Batch 64 on 1x28x28 MNIST digits: a Defed (Laplacian) + LeNet training step (noisy batch ->
//! Defed -> clamp -> frozen LeNet, loss CE + MSE, Adam), Defed + LeNet inference, and the
//! LeNet input gradient (the inner loop of every gradient attack); plus the defender's
//! latency for one image with 3 Defed denoisers (the edge-camera case); and one step of PGD
//! adversarial training of the Madry et al. CNN (PGD-10 at Linf 0.3, then Adam), the
//! workload of robust training.

use std::time::Instant;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use serde::Serialize;

use crate::attack::{AttackModel, Norm};
use crate::backend::Device;
use crate::data::{ImageSet, add_gaussian_noise_tensor, embedded_mnist};
use crate::defense::Defender;
use crate::error::Result;
use crate::model::{Classifier, Defed, EdgeMethod, MadryCnn, MadryWidths, embedded};
use crate::train::{AdversarialConfig, AdversarialMethod, train_step};
use crate::util::{one_hot, to_vec};

/// Images per batch in the batched workloads.
pub const BATCH: usize = 64;

/// The inputs and models of every workload, built once.
pub struct Workloads {
    device: Device,
    data: ImageSet,
    classifier: Classifier,
    frozen: Classifier,
    model: Option<Defed>,
    optim: ModuleOptimizer,
    x: Tensor<4>,
    noisy: Tensor<4>,
    target: Tensor<2>,
    defender: Defender,
    plain_batch: Tensor<4>,
    robust: Option<MadryCnn>,
    robust_optim: ModuleOptimizer,
    robust_batch: ImageSet,
    ad: Device,
}

/// The adversarial-training workload's settings: PGD-10, Linf 0.3, step 0.075, random start.
pub(crate) fn adversarial_bench_config() -> AdversarialConfig {
    AdversarialConfig {
        method: AdversarialMethod::Pgd,
        norm: Norm::Linf,
        eps: 0.3,
        steps: 10,
        step_size: 0.075,
        ramp_epochs: 0.0,
        beta: 6.0,
        val_images: 0,
        val_steps: 0,
        min_val_robust: None,
    }
}

/// One workload's throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Workload name (as in BENCHMARKS.md).
    pub name: &'static str,
    /// Images per second.
    pub images_per_second: f64,
    /// Milliseconds per call.
    pub ms_per_call: f64,
    /// Timed calls.
    pub calls: usize,
}

impl Workloads {
    /// Builds the workloads on `device` (the plain device; training uses its autodiff form).
    pub fn new(device: &Device) -> Result<Self> {
        let data = embedded_mnist().take(BATCH);
        let ad = device.clone().autodiff();
        let (clf, _) = embedded::default_classifier(&ad)?;
        let frozen = clf.frozen();
        let model = Defed::new(1, EdgeMethod::Laplacian, &ad);
        let x = data.tensor(0, BATCH, &ad);
        let noisy = add_gaussian_noise_tensor(x.clone(), 40.0, 0);
        let target = one_hot(&data.labels, 10, &ad);
        let mut defender = Defender::embedded(device)?;
        defender.thresholds = Some(vec![1.0; defender.denoisers.len()]);
        let classifier = defender.classifier.clone();
        let plain_batch = data.tensor(0, BATCH, device);
        let robust = MadryCnn::new(1, MadryWidths::default(), &ad);
        Ok(Workloads {
            robust: Some(robust),
            robust_optim: burn::optim::AdamConfig::new().with_epsilon(1e-8).init(),
            robust_batch: data.clone(),
            ad,
            device: device.clone(),
            data,
            classifier,
            frozen,
            model: Some(model),
            optim: burn::optim::AdamConfig::new().with_epsilon(1e-8).init(),
            x,
            noisy,
            target,
            defender,
            plain_batch,
        })
    }

    /// One training step; returns nothing so that GPU work stays queued.
    pub fn train_step(&mut self) {
        let model = self.model.take().expect("model is always put back");
        let d = model.forward(self.noisy.clone()).clamp(0.0, 1.0);
        let diff = self.x.clone() - d.clone();
        let vision = (diff.clone() * diff).mean();
        let class: Tensor<1> =
            crate::util::cross_entropy_rows(self.frozen.logits(d), self.target.clone()).mean();
        let grads = GradientsParams::from_grads((class + vision).backward(), &model);
        self.model = Some(self.optim.step(1e-3, model, grads));
    }

    /// Defed then LeNet on the batch, without autodiff; returns the logits.
    pub fn inference(&self) -> Vec<f32> {
        let den = &self.defender.denoisers[0].net;
        let d = den.forward(self.plain_batch.clone()).clamp(0.0, 1.0);
        to_vec(self.classifier.logits(d))
    }

    /// The LeNet cross-entropy gradient with respect to the batch of inputs.
    pub fn input_gradient(&self) -> Vec<f32> {
        let am = AttackModel::new(&self.classifier, &self.device);
        am.ce_grad(&self.data.images, &self.data.labels).0
    }

    /// The defender's verdict on one image (1 + 3 x (denoiser + classifier) passes).
    pub fn defend_one(&self) -> Result<()> {
        self.defender.defend(self.data.image(0), &self.device)?;
        Ok(())
    }

    /// One PGD adversarial-training step of the Madry CNN (the training code's own step).
    pub fn adversarial_step(&mut self) {
        let model = self.robust.take().expect("model is always put back");
        let cfg = adversarial_bench_config();
        let (model, _, _) = train_step(
            model,
            &mut self.robust_optim,
            1e-3,
            &self.robust_batch,
            Some((&cfg, cfg.eps)),
            0,
            &self.ad,
        );
        self.robust = Some(model);
    }

    /// The workload names, in the order [`measure`](Self::measure) runs them.
    pub const NAMES: [&'static str; 5] = [
        "defed_train_step",
        "defed_lenet_inference",
        "lenet_input_gradient",
        "defender_latency",
        "madry_pgd10_train_step",
    ];

    /// Times every workload for about `seconds` each (after one warm-up call).
    pub fn measure_all(&mut self, seconds: f64) -> Result<Vec<Measurement>> {
        self.measure(&Self::NAMES, seconds)
    }

    /// Times the named workloads (see [`NAMES`](Self::NAMES)) for about `seconds` each.
    pub fn measure(&mut self, names: &[&str], seconds: f64) -> Result<Vec<Measurement>> {
        let mut out = Vec::new();
        for &name in &Self::NAMES {
            if !names.contains(&name) {
                continue;
            }
            out.push(match name {
                "defed_train_step" => self.time(name, BATCH, seconds, |w| {
                    w.train_step();
                    Ok(())
                })?,
                "defed_lenet_inference" => self.time(name, BATCH, seconds, |w| {
                    w.inference();
                    Ok(())
                })?,
                "lenet_input_gradient" => self.time(name, BATCH, seconds, |w| {
                    w.input_gradient();
                    Ok(())
                })?,
                "madry_pgd10_train_step" => self.time(name, BATCH, seconds, |w| {
                    w.adversarial_step();
                    Ok(())
                })?,
                _ => self.time(name, 1, seconds, |w| w.defend_one())?,
            });
        }
        Ok(out)
    }

    fn time(
        &mut self,
        name: &'static str,
        images: usize,
        seconds: f64,
        mut f: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<Measurement> {
        f(self)?;
        self.sync();
        let start = Instant::now();
        let mut calls = 0;
        while calls == 0 || start.elapsed().as_secs_f64() < seconds {
            f(self)?;
            calls += 1;
        }
        self.sync();
        let elapsed = start.elapsed().as_secs_f64();
        Ok(Measurement {
            name,
            images_per_second: (calls * images) as f64 / elapsed,
            ms_per_call: elapsed * 1000.0 / calls as f64,
            calls,
        })
    }

    /// Waits for queued device work (GPU backends run asynchronously).
    fn sync(&self) {
        // A failed sync surfaces again at the next read; timing goes on either way.
        let _ = self.device.sync();
        if let Some(model) = &self.model {
            let _ = model.skip1.layers[0].weight.val().device().sync();
        }
    }
}
