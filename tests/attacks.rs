//! The attack suite against the original LeNet on the first 200 benign MNIST test images:
//! budgets respected, success at least IBM ART's on the same images, determinism.

mod common;

use defed::attack::{
    AdvSet, Attack, AttackModel, CwL2, CwLinf, DeepFool, Fgsm, HopSkipJump, Jsma, Norm, Pgd,
    Square, Target, benign_set, run_attack,
};
use defed::data::ImageSet;
use defed::model::load_classifier;

fn setup(n: usize) -> Option<(AttackModel, ImageSet)> {
    let sh = common::shared()?;
    let dev = defed::default_device();
    let (clf, _) = load_classifier(
        sh.join("reference/checkpoints/pytorch/mnist-classifier.pth"),
        &dev,
    )
    .unwrap();
    let model = AttackModel::new(&clf, &dev);
    let test = common::mnist_test(&sh);
    let benign = benign_set(&model, &test.take(400), n, 256);
    Some((model, benign))
}

fn check(attack: &dyn Attack, model: &AttackModel, set: &ImageSet, min_rate: f64) -> AdvSet {
    let r = run_attack(attack, model, set, 64, 1, false, Target::Untargeted).unwrap();
    let s = r.stats.clone().unwrap();
    eprintln!(
        "{}: {}/{} = {:.1}% in {:.3} s/img; mean L0 {:.1} L1 {:.2} L2 {:.3} Linf {:.3}",
        s.attack,
        s.succeeded,
        s.attempted,
        100.0 * s.success_rate,
        s.seconds_per_image,
        s.mean_l0,
        s.mean_l1,
        s.mean_l2,
        s.mean_linf
    );
    let per = set.image_len();
    for k in 0..r.src_idx.len() {
        let a = &r.adv[k * per..(k + 1) * per];
        let b = r.benign.image(k);
        assert!(
            a.iter().all(|v| (0.0..=1.0).contains(v)),
            "{} leaves [0, 1]",
            s.attack
        );
        if let Some(eps) = attack.eps() {
            let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
            let size = attack.norm().of(&d);
            assert!(
                size <= eps as f64 + 1e-6,
                "{}: perturbation {size} > {eps}",
                s.attack
            );
        }
    }
    assert!(
        s.success_rate >= min_rate,
        "{}: success {:.3} < {min_rate}",
        s.attack,
        s.success_rate
    );
    r
}

#[test]
fn benign_set_matches_the_reference() {
    let Some(sh) = common::shared() else { return };
    let Some((_, benign)) = setup(200) else {
        return;
    };
    let want =
        defed::io::read_npy(sh.join("reference/adversarial/benign_test_indices.npy")).unwrap();
    let want: Vec<usize> = want
        .to_i64()
        .unwrap()
        .iter()
        .take(200)
        .map(|&v| v as usize)
        .collect();
    assert_eq!(benign.indices, want);
}

#[test]
fn gradient_attacks() {
    let Some((model, set)) = setup(200) else {
        return;
    };
    check(&Pgd::linf(0.3), &model, &set, 0.99);
    check(
        &Fgsm {
            eps: 0.3,
            norm: Norm::Linf,
        },
        &model,
        &set,
        0.725,
    );
    let pgd_l2 = Pgd {
        norm: Norm::L2,
        eps: 2.0,
        step: 0.1,
        iterations: 100,
        random_init: false,
        restarts: 1,
        early_stop: false,
    };
    check(&pgd_l2, &model, &set, 0.90);
    let r = check(&DeepFool::default(), &model, &set, 0.99);
    assert!(r.stats.unwrap().mean_l2 <= 1.6);
}

#[test]
fn jsma_and_cw() {
    let Some((model, set)) = setup(200) else {
        return;
    };
    check(&Jsma::default(), &model, &set, 1.0);
    check(&CwLinf::new(64.0 / 256.0), &model, &set, 0.60);
    // CW-L2 is slow by design (binary search over c); 50 images bound the test time.
    let r = check(&CwL2::default(), &model, &set.take(50), 0.98);
    assert!(
        r.stats.unwrap().mean_l2 <= 1.6,
        "CW-L2 should beat DeepFool's distortion"
    );
}

#[test]
fn black_box_attacks() {
    let Some((model, set)) = setup(200) else {
        return;
    };
    check(&Square::new(128.0 / 256.0), &model, &set, 1.0);
    check(&Square::new(64.0 / 256.0), &model, &set, 0.60);
    let r = check(&HopSkipJump::new(Norm::L2), &model, &set, 1.0);
    assert!(r.stats.unwrap().mean_l2 <= 2.2);
}

#[test]
fn attacks_are_deterministic_with_a_seed() {
    let Some((model, set)) = setup(32) else {
        return;
    };
    let a = run_attack(
        &Square::new(0.2),
        &model,
        &set,
        16,
        9,
        false,
        Target::Untargeted,
    )
    .unwrap();
    let b = run_attack(
        &Square::new(0.2),
        &model,
        &set,
        16,
        9,
        false,
        Target::Untargeted,
    )
    .unwrap();
    assert_eq!(a.adv, b.adv);
    let c = run_attack(
        &Square::new(0.2),
        &model,
        &set,
        16,
        10,
        false,
        Target::Untargeted,
    )
    .unwrap();
    assert_ne!(a.adv, c.adv);
}

#[test]
fn targeted_attacks_reach_their_targets() {
    let Some((model, set)) = setup(40) else {
        return;
    };
    let r = run_attack(&Pgd::linf(0.3), &model, &set, 64, 3, false, Target::Next).unwrap();
    let s = r.stats.clone().unwrap();
    eprintln!("targeted PGD: {:.1}%", 100.0 * s.success_rate);
    assert!(s.targeted);
    assert!(s.success_rate >= 0.9, "{}", s.success_rate);
    for (k, &src) in r.src_idx.iter().enumerate() {
        assert_eq!(r.targets[k], (set.labels[src] + 1) % 10);
        assert_eq!(r.adv_pred[k], r.targets[k]);
    }
    // Images already of the target class are left out.
    let r = run_attack(
        &Fgsm {
            eps: 0.3,
            norm: Norm::Linf,
        },
        &model,
        &set,
        64,
        3,
        false,
        Target::Class(7),
    )
    .unwrap();
    assert_eq!(
        r.stats.unwrap().attempted,
        set.labels.iter().filter(|&&l| l != 7).count()
    );
    // An attack without a targeted mode refuses.
    assert!(
        run_attack(
            &DeepFool::default(),
            &model,
            &set,
            64,
            3,
            false,
            Target::Random
        )
        .is_err()
    );
}

/// Every attack of the registry, in every norm it works in, against the embedded LeNet (no
/// shared data needed): pixels in [0, 1], the budget respected, the same seed giving the same
/// images, and the targeted mode reaching its targets where the attack has one.
#[test]
fn every_registered_attack_keeps_its_contract() {
    use defed::attack::{AttackKind, AttackSettings, build_attack};
    let dev = defed::default_device();
    let (clf, _) = defed::model::embedded::default_classifier(&dev).unwrap();
    let model = AttackModel::new(&clf, &dev);
    let (_, val) = defed::data::embedded_mnist().split(0.1, 0);
    let set = benign_set(&model, &val, 6, 64);
    let quick = AttackSettings {
        iterations: Some(12),
        random_init: true,
        ..AttackSettings::default()
    };
    let per = set.image_len();
    let mut checked = 0;
    for kind in AttackKind::ALL {
        for &norm in kind.norms() {
            let attack = build_attack(kind, norm, None, &quick).unwrap();
            let name = attack.name();
            let run = |seed: u64, target: Target| {
                run_attack(attack.as_ref(), &model, &set, 4, seed, false, target).unwrap()
            };
            let r = run(5, Target::Untargeted);
            assert_eq!(
                r.adv,
                run(5, Target::Untargeted).adv,
                "{name}: not reproducible"
            );
            for k in 0..r.src_idx.len() {
                let a = &r.adv[k * per..(k + 1) * per];
                assert!(
                    a.iter().all(|v| (0.0..=1.0).contains(v)),
                    "{name} leaves [0, 1]"
                );
                if let Some(eps) = attack.eps() {
                    let d: Vec<f32> = a
                        .iter()
                        .zip(r.benign.image(k))
                        .map(|(x, y)| x - y)
                        .collect();
                    let size = attack.norm().of(&d);
                    assert!(
                        size <= eps as f64 * (1.0 + 1e-5) + 1e-6,
                        "{name}: {size} > {eps}"
                    );
                }
            }
            if attack.supports_targets() {
                let t = run(5, Target::Next);
                assert!(t.stats.as_ref().unwrap().targeted, "{name}");
                for (k, &src) in t.src_idx.iter().enumerate() {
                    assert_eq!(t.targets[k], (set.labels[src] + 1) % 10, "{name}");
                    assert_eq!(t.adv_pred[k], t.targets[k], "{name}: missed its target");
                }
            } else {
                let refused =
                    run_attack(attack.as_ref(), &model, &set, 4, 5, false, Target::Next).is_err();
                assert!(refused, "{name} has no targeted mode and should say so");
            }
            eprintln!("{name}: {} of {} fooled", r.src_idx.len(), set.len());
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}
