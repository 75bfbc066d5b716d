//! The performance issue's workloads (see `defed::bench`), batch 64 on 1x28x28 MNIST
//! digits: a Defed + LeNet training step, Defed + LeNet inference, the LeNet input gradient;
//! the defender's latency for one image (3 Defed denoisers), the edge-camera case; and a PGD-10
//! adversarial-training step of the Madry et al. CNN.
//!
//! `cargo bench --bench workloads`; throughput is reported in images per second.
//! `defed bench` times the same workloads on any `--device`; `scripts/bench-vs-pytorch.sh`
//! runs PyTorch's side.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use defed::bench::{BATCH, Workloads};

fn workloads(c: &mut Criterion) {
    let device = defed::default_device();
    let mut w = Workloads::new(&device).expect("embedded models load");
    let mut g = c.benchmark_group("batch64");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.bench_function("defed_train_step", |b| b.iter(|| w.train_step()));
    g.bench_function("defed_lenet_inference", |b| b.iter(|| w.inference()));
    g.bench_function("lenet_input_gradient", |b| b.iter(|| w.input_gradient()));
    g.bench_function("madry_pgd10_train_step", |b| {
        b.iter(|| w.adversarial_step())
    });
    g.finish();

    let mut g = c.benchmark_group("batch1");
    g.throughput(Throughput::Elements(1));
    g.bench_function("defender_latency", |b| {
        b.iter(|| w.defend_one().expect("defend"))
    });
    g.finish();
}

criterion_group!(benches, workloads);
criterion_main!(benches);
