//! The performance issue's workloads, batch 64 on 1x28x28 MNIST digits: a Defed + LeNet training
//! step, Defed + LeNet inference, the LeNet input gradient; and the defender's latency for one
//! image (3 Defed denoisers), the edge-camera case.
//!
//! `cargo bench --bench workloads`; throughput is reported in images per second.
//! `scripts/bench-vs-pytorch.sh` runs PyTorch's side of the same workloads.

use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use defed::attack::AttackModel;
use defed::data::embedded_mnist;
use defed::defense::Defender;
use defed::model::{Defed, EdgeMethod, embedded};
use defed::util::one_hot;

const BATCH: usize = 64;

fn workloads(c: &mut Criterion) {
    let data = embedded_mnist().take(BATCH);
    let mut g = c.benchmark_group("batch64");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);

    // Training step: noisy batch -> Defed -> clamp -> frozen LeNet; alpha * CE + MSE; Adam.
    let ad = defed::autodiff_device();
    let (clf, _) = embedded::default_classifier(&ad).unwrap();
    let clf = clf.frozen();
    let mut model = Defed::new(1, EdgeMethod::Laplacian, &ad);
    let mut optim = burn::optim::AdamConfig::new().with_epsilon(1e-8).init();
    let x = data.tensor(0, BATCH, &ad);
    let xn = defed::data::add_gaussian_noise_tensor(x.clone(), 40.0, 0);
    let target = one_hot(&data.labels, 10, &ad);
    g.bench_function("defed_train_step", |b| {
        b.iter(|| {
            let d = model.forward(xn.clone()).clamp(0.0, 1.0);
            let diff = x.clone() - d.clone();
            let vision = (diff.clone() * diff).mean();
            let class: Tensor<1> = (log_softmax(clf.logits(d), 1) * target.clone())
                .sum_dim(1)
                .mean()
                .neg();
            let loss = class + vision;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model.clone(), grads);
        })
    });

    // Inference: Defed then LeNet, no autodiff.
    let device = defed::default_device();
    let mut defender = Defender::embedded(&device).unwrap();
    let clf_plain = defender.classifier.clone();
    let den = defender.denoisers[0].net.clone();
    let xp = data.tensor(0, BATCH, &device);
    g.bench_function("defed_lenet_inference", |b| {
        b.iter(|| {
            let d = den.forward(xp.clone()).clamp(0.0, 1.0);
            defed::util::to_vec(clf_plain.logits(d))
        })
    });

    // LeNet input gradient (the inner loop of every gradient attack).
    let am = AttackModel::new(&clf_plain, &device);
    g.bench_function("lenet_input_gradient", |b| {
        b.iter(|| am.ce_grad(&data.images, &data.labels))
    });
    g.finish();

    // The defender on one image: 1 + 3 x (denoiser + classifier) passes.
    defender.thresholds = Some(vec![1.0; 3]);
    let one = data.image(0).to_vec();
    let mut g = c.benchmark_group("batch1");
    g.throughput(Throughput::Elements(1));
    g.bench_function("defender_latency", |b| {
        b.iter(|| defender.defend(&one, &device).unwrap())
    });
    g.finish();
}

criterion_group!(benches, workloads);
criterion_main!(benches);
