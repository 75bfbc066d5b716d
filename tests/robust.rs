//! Adversarial training: the Madry et al. CNN loads and saves like the other classifiers, PGD
//! and TRADES training buy robustness that plain training does not, TRADES' inner gradient is
//! the KL's, and denoisers train on adversarial examples crafted through themselves.

mod common;

use defed::attack::{AttackModel, Norm, Pgd};
use defed::data::embedded_mnist;
use defed::model::checkpoint::CheckpointMeta;
use defed::model::{
    Classifier, Defed, Denoiser, EdgeMethod, LeNet, MadryCnn, MadryWidths, load_classifier,
    load_denoiser, save_model,
};
use defed::train::{
    AdversarialConfig, AdversarialMethod, ClassifierTrainConfig, DenoiserAdversarial,
    DenoiserTrainConfig, RunOptions, robust_accuracy, train_classifier, train_denoiser,
};

fn opts(dir: &std::path::Path, name: &str, epochs: usize) -> RunOptions {
    RunOptions {
        out_dir: dir.to_path_buf(),
        name: name.into(),
        epochs,
        batch_size: 32,
        lr: 1e-3,
        milestones: vec![],
        seed: 11,
        resume: false,
        progress: false,
        source: "test".into(),
        dataset: "mnist-embedded".into(),
    }
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn madry_cnn_saves_loads_and_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let device = defed::default_device();
    device.seed(1);
    let widths = MadryWidths {
        conv1: 4,
        conv2: 8,
        hidden: 32,
    };
    let net = MadryCnn::new(1, widths, &device);
    assert_eq!(net.widths(), widths);
    let path = dir.path().join("m.safetensors");
    save_model(
        &net,
        &CheckpointMeta::new(defed::model::Architecture::MadryCnn, 1),
        &path,
    )
    .unwrap();
    let x = embedded_mnist().take(8);
    let want = defed::util::to_vec(net.forward(x.tensor(0, 8, &device)));
    let (loaded, meta) = load_classifier(&path, &device).unwrap();
    assert_eq!(meta.architecture.name(), "madry-cnn");
    assert_eq!(loaded.input_shape(), [1, 28, 28]);
    let got = defed::util::to_vec(loaded.logits(x.tensor(0, 8, &device)));
    assert!(max_abs(&want, &got) < 1e-5);

    // A defender bundle holds it with Defed denoisers, and reloads the same network.
    let den = Defed::new(1, EdgeMethod::Laplacian, &device);
    let mut dmeta = CheckpointMeta::new(defed::model::Architecture::Defed, 1);
    dmeta.edge = Some(EdgeMethod::Laplacian);
    dmeta.noise = Some(20.0);
    let dpath = dir.path().join("d.safetensors");
    save_model(&den, &dmeta, &dpath).unwrap();
    let mut defender = defed::defense::Defender::from_checkpoints(
        &path,
        &[dpath],
        1.0,
        &device,
        &Default::default(),
    )
    .unwrap();
    defender.thresholds = Some(vec![1.0]);
    let bundle = dir.path().join("b.safetensors");
    defender.save(&bundle).unwrap();
    let back = defed::defense::Defender::load(&bundle, &device).unwrap();
    let got = defed::util::to_vec(back.classifier.logits(x.tensor(0, 8, &device)));
    assert!(max_abs(&want, &got) < 1e-5);
    assert_eq!(back.defend(&x.images, &device).unwrap().len(), 8);

    // A Madry CNN file is not mistaken for LeNet when it has no metadata (imported weights).
    let raw = defed::model::checkpoint::read_checkpoint(&path).unwrap();
    let inferred = defed::model::checkpoint::infer_architecture(&raw).unwrap();
    assert_eq!(inferred.0.name(), "madry-cnn");
}

fn adversarial(method: AdversarialMethod, eps: f32) -> AdversarialConfig {
    AdversarialConfig {
        method,
        norm: Norm::Linf,
        eps,
        steps: 5,
        step_size: 2.5 * eps / 5.0,
        ramp_epochs: 0.5,
        beta: 3.0,
        val_images: 200,
        val_steps: 10,
        min_val_robust: None,
    }
}

#[test]
fn adversarial_training_buys_robustness_that_plain_training_does_not() {
    let (train, val) = embedded_mnist().split(0.1, 0);
    let train = train.take(4000);
    let val = val.take(300);
    let device = defed::autodiff_device();
    let eps = 0.15;
    let attack = Pgd {
        norm: Norm::Linf,
        eps,
        step: 0.02,
        iterations: 20,
        random_init: true,
        restarts: 1,
        early_stop: false,
    };
    let mut robust = Vec::new();
    for (name, adv) in [
        ("plain", None),
        ("pgd", Some(adversarial(AdversarialMethod::Pgd, eps))),
        ("trades", Some(adversarial(AdversarialMethod::Trades, eps))),
    ] {
        let dir = tempfile::tempdir().unwrap();
        device.seed(5);
        let cfg = ClassifierTrainConfig {
            augment: defed::data::Augment::shifts(1),
            adversarial: adv,
            ..Default::default()
        };
        let p = train_classifier(
            LeNet::new(&device),
            &train,
            &val,
            &cfg,
            &opts(dir.path(), name, 4),
            &device,
        )
        .unwrap();
        let (clf, meta) =
            load_classifier(dir.path().join(format!("{name}.safetensors")), &device).unwrap();
        let r = robust_accuracy(&clf, &val, &attack, 100, 3, &device).unwrap();
        let clean = meta.metrics["val_accuracy"];
        eprintln!("{name}: clean {clean:.3}, PGD-20 Linf {eps}: {r:.3}");
        if name != "plain" {
            // The checkpoint kept is the epoch with the best robust validation accuracy.
            let best = p.best["val_robust_accuracy"];
            assert_eq!(meta.metrics["val_robust_accuracy"], best);
            assert!(p.history.iter().all(|h| h["val_robust_accuracy"] <= best));
        }
        assert!(clean > 0.8, "{name}: clean accuracy {clean}");
        robust.push(r);
    }
    assert!(
        robust[1] > robust[0] + 0.2 && robust[2] > robust[0] + 0.2,
        "adversarial training should buy robustness: plain {:.3}, pgd {:.3}, trades {:.3}",
        robust[0],
        robust[1],
        robust[2]
    );
}

#[test]
fn trades_inner_gradient_is_the_kl_gradient() {
    let device = defed::default_device();
    device.seed(2);
    let clf = Classifier::Lenet(Box::new(LeNet::new(&device))).frozen();
    let am = AttackModel::new(&clf, &device);
    let x = embedded_mnist().take(2);
    let p = am.probabilities(&x.images);
    let mut xs = x.images.clone();
    xs.iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (*v + 0.05 * ((i % 7) as f32 - 3.0) / 3.0).clamp(0.0, 1.0));
    let g = am.kl_grad(&xs, &p);
    let kl = |z: &[f32]| -> f64 {
        let q = am.probabilities(z);
        p.iter()
            .zip(&q)
            .map(|(&a, &b)| a as f64 * ((a as f64).max(1e-30).ln() - (b as f64).ln()))
            .sum()
    };
    let h = 1e-2f32;
    let mut checked = 0;
    for i in (0..xs.len()).step_by(97) {
        let mut up = xs.clone();
        let mut down = xs.clone();
        up[i] += h;
        down[i] -= h;
        let fd = (kl(&up) - kl(&down)) / (2.0 * h as f64);
        assert!(
            (fd - g[i] as f64).abs() < 2e-3 + 0.05 * fd.abs(),
            "pixel {i}: finite difference {fd}, gradient {}",
            g[i]
        );
        checked += 1;
    }
    assert!(checked > 10);
}

#[test]
fn attacks_go_through_a_denoiser_and_denoisers_train_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let device = defed::autodiff_device();
    device.seed(4);
    let (train, val) = embedded_mnist().split(0.1, 0);
    let train = train.take(256);
    let val = val.take(64);
    let plain = device.clone().inner();
    let clf = Classifier::Lenet(Box::new(LeNet::new(&device))).frozen();
    let den = Denoiser::Defed(Box::new(Defed::new(1, EdgeMethod::Laplacian, &device))).frozen();
    // The denoised attack model computes C(clamp(D(x))).
    let am = AttackModel::denoised(&clf, &den, &device);
    let want = defed::util::to_vec(
        clf.valid().to_device(&plain).logits(
            den.clone()
                .to_device(&plain)
                .forward(val.tensor(0, 8, &plain))
                .clamp(0.0, 1.0),
        ),
    );
    let got = am.logits(&val.take(8).images);
    assert!(max_abs(&want, &got) < 1e-4);

    let cfg = DenoiserTrainConfig {
        noise: 40.0,
        alpha: 1.0,
        edge: Some(EdgeMethod::Laplacian),
        alpha_warmup: 0,
        adversarial: Some(DenoiserAdversarial {
            threats: vec![(Norm::Linf, 0.3), (Norm::L2, 2.0)],
            steps: 3,
            fraction: 0.5,
        }),
        detection: None,
        average: None,
        augment: Default::default(),
    };
    let p = train_denoiser(
        Defed::new(1, EdgeMethod::Laplacian, &device),
        &clf,
        &train,
        &val,
        &cfg,
        &opts(dir.path(), "adv", 1),
        &device,
    )
    .unwrap();
    assert!(p.history[0]["train_total"].is_finite());
    let (_, meta) = load_denoiser(
        dir.path().join("adv.safetensors"),
        &device,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(meta.noise, Some(40.0));

    // Bad settings are errors.
    let mut bad = cfg.clone();
    bad.adversarial.as_mut().unwrap().fraction = 0.0;
    let e = train_denoiser(
        Defed::new(1, EdgeMethod::Laplacian, &device),
        &clf,
        &train,
        &val,
        &bad,
        &opts(dir.path(), "bad", 1),
        &device,
    )
    .unwrap_err();
    assert!(e.to_string().contains("fraction"), "{e}");
}

#[test]
fn shipped_robust_classifier_is_robust_and_shows_no_gradient_masking() {
    let device = defed::default_device();
    let (clf, meta) = defed::model::embedded::robust_classifier(&device).unwrap();
    assert_eq!(meta.architecture.name(), "madry-cnn");
    robust_and_unmasked(&clf, &device);
}

/// The weight-averaged fine-tune in `models/` (not compiled in; `models/README.md`): the same
/// checks, and the clean-accuracy bar on the first 1,000 real test images (the compiled-in
/// classifier reads 98.4% there).
#[test]
fn averaged_robust_classifier_meets_the_clean_bar_and_shows_no_gradient_masking() {
    let device = defed::default_device();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/madry-trades-ema-mnist.safetensors");
    let (clf, meta) = load_classifier(&path, &device).unwrap();
    assert_eq!(meta.architecture.name(), "madry-cnn");
    robust_and_unmasked(&clf, &device);
    let Some(sh) = common::shared() else { return };
    let test = common::mnist_test(&sh).take(1000);
    let pred = AttackModel::new(&clf, &device).predict(&test.images);
    let acc = defed::eval::accuracy(&pred, &test.labels);
    eprintln!("first 1,000 real test images: {acc}");
    assert!(acc >= 0.985, "{acc} on the first 1,000");
}

/// Robust at Linf 0.3 on held-out digits, and the gradient-masking checks.
fn robust_and_unmasked(clf: &Classifier, device: &defed::Device) {
    // Held-out embedded digits (the seed-0 validation split it was not trained on).
    let (_, val) = embedded_mnist().split(0.1, 0);
    let set = val.take(100);
    let pgd = |norm: Norm, eps: f32, iterations: usize| Pgd {
        norm,
        eps,
        step: 2.5 * eps / iterations as f32,
        iterations,
        random_init: true,
        restarts: 1,
        early_stop: false,
    };
    let acc = |attack: &Pgd| robust_accuracy(clf, &set, attack, 100, 0, device).unwrap();
    let clean = acc(&pgd(Norm::Linf, 1e-6, 1));
    let r: Vec<f64> = [0.1, 0.2, 0.3, 0.4]
        .iter()
        .map(|&e| acc(&pgd(Norm::Linf, e, 40)))
        .collect();
    let whole_box = acc(&pgd(Norm::Linf, 1.0, 40));
    eprintln!("clean {clean}, PGD-40 Linf 0.1-0.4: {r:?}, eps 1: {whole_box}");
    assert!(clean >= 0.95, "clean accuracy {clean}");
    assert!(r[2] >= 0.75, "PGD-40 at Linf 0.3: {}", r[2]);
    // Gradient-masking checks: success grows with eps, and the whole box breaks everything.
    assert!(r.windows(2).all(|w| w[0] >= w[1]), "{r:?}");
    assert!(
        r[3] < r[2] - 0.1,
        "Linf 0.4 should break far more than 0.3: {r:?}"
    );
    assert_eq!(whole_box, 0.0);
    // White-box PGD is at least as strong as a single FGSM-like step (a masked gradient makes
    // the iterated attack no better than one step).
    let one_step = acc(&Pgd {
        step: 0.3,
        random_init: false,
        ..pgd(Norm::Linf, 0.3, 1)
    });
    assert!(r[2] <= one_step, "PGD {} vs one step {one_step}", r[2]);
}
