//! APGD, the strong protocol, and the adaptive attack on a defender: sanity checks.

use defed::attack::{
    AdaptiveConfig, Apgd, Attack, AttackModel, Norm, Pgd, adaptive_attack, adaptive_attack_from,
    strong_protocol, transfer_pgd,
};
use defed::data::{ImageSet, embedded_mnist};
use defed::default_device;
use defed::defense::{Defender, thresholds_k_std};
use defed::eval::adaptive::{AdaptiveRow, adaptive_images_csv};
use defed::model::embedded;

/// Held-out embedded digits (the default classifier never trained on them).
fn held_out(n: usize) -> ImageSet {
    embedded_mnist().split(0.1, 0).1.take(n)
}

#[test]
fn apgd_beats_pgd_and_grows_with_eps() {
    let device = default_device();
    let (clf, _) = embedded::default_classifier(&device).unwrap();
    let model = AttackModel::new(&clf, &device);
    let set = held_out(48);
    let robust = |attacks: Vec<Box<dyn Attack>>| {
        strong_protocol(&model, &set, &attacks, 48, 0)
            .unwrap()
            .robust_accuracy
    };
    let mut last = 1.0;
    for eps in [0.05f32, 0.1, 0.2] {
        let cfg = |mut a: Apgd| {
            a.config.iterations = 40;
            a
        };
        let apgd = robust(vec![Box::new(cfg(Apgd::ce(Norm::Linf, eps)))]);
        let pgd = robust(vec![Box::new(Pgd {
            iterations: 40,
            step: eps / 10.0,
            ..Pgd::linf(eps)
        })]);
        eprintln!("eps {eps}: robust accuracy APGD-CE {apgd:.3}, PGD {pgd:.3}");
        assert!(
            apgd <= pgd + 1.0 / 48.0,
            "APGD {apgd} weaker than PGD {pgd}"
        );
        assert!(
            apgd <= last,
            "robust accuracy rose with eps: {apgd} after {last}"
        );
        last = apgd;
    }
    assert!(
        last < 0.2,
        "eps 0.2 leaves {last} robust: the attack is broken"
    );
    // The targeted DLR stage adds to CE at a small budget, never removes.
    let both = robust(vec![
        Box::new(Apgd::ce(Norm::Linf, 0.05)),
        Box::new(Apgd {
            targets: 3,
            ..Apgd::dlr_targeted(Norm::Linf, 0.05)
        }),
    ]);
    let ce = robust(vec![Box::new(Apgd::ce(Norm::Linf, 0.05))]);
    assert!(both <= ce);
    // Per image: the stage that broke it, its final label and perturbation agree with the
    // stage counts and the budget.
    let attacks: Vec<Box<dyn Attack>> = vec![
        Box::new(Apgd::ce(Norm::Linf, 0.1)),
        Box::new(Apgd::dlr_targeted(Norm::Linf, 0.1)),
    ];
    let r = strong_protocol(&model, &set, &attacks, 48, 0).unwrap();
    for (s, stage) in r.stages.iter().enumerate() {
        let n = r.broken_at.iter().filter(|b| **b == Some(s + 1)).count();
        assert_eq!(n, stage.broken, "stage {}", s + 1);
    }
    let csv = defed::attack::strong_images_csv(std::slice::from_ref(&r), &set);
    let lines: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(lines.len(), set.len());
    for (i, l) in lines.iter().enumerate() {
        let c: Vec<&str> = l.split(',').collect();
        let (label, fin, size): (usize, usize, f64) = (
            c[3].parse().unwrap(),
            c[4].parse().unwrap(),
            c[6].parse().unwrap(),
        );
        assert_eq!(label, set.labels[i]);
        assert_eq!(c[5].is_empty(), label == fin, "{l}");
        assert!(size <= 0.1 + 1e-6, "{l}");
        assert_eq!(c[5].is_empty() || c[5] == "0", size == 0.0, "{l}");
    }
}

fn small_defender() -> Defender {
    let device = default_device();
    // The noise-60 denoiser alone keeps the test fast.
    let mut d = Defender::embedded(&device).unwrap().subset(&[1]);
    let cal = embedded_mnist()
        .split(0.1, 0)
        .1
        .select(&(500..700).collect::<Vec<_>>());
    let s = d.scores_batched(&cal.images, 100, &device).unwrap();
    d.thresholds = Some(thresholds_k_std(&s, 2.0));
    d
}

#[test]
fn adaptive_attack_sanity() {
    let device = default_device();
    let d = small_defender();
    let set = held_out(8);
    let run = |eps: f32| {
        let cfg = AdaptiveConfig {
            iterations: 30,
            lambdas: vec![1.0, 10.0],
            ..AdaptiveConfig::new(Norm::Linf, eps)
        };
        let r = adaptive_attack(&d, &set, &cfg, &device).unwrap();
        assert!(r.max_perturbation <= eps as f64 + 1e-6);
        eprintln!(
            "eps {eps}: evade {:.3} flagged {:.3} wrong {:.3} ({:.1} s)",
            r.evade_success, r.flagged, r.wrong_label, r.seconds
        );
        r
    };
    let mut last = 0.0;
    for eps in [0.05f32, 0.15, 0.3] {
        let r = run(eps);
        assert!(
            r.evade_success >= last,
            "success fell from {last} to {} at eps {eps}",
            r.evade_success
        );
        last = r.evade_success;
        if eps == 0.15 {
            // White-box beats transferring a non-adaptive attack on the classifier.
            let (clf, _) = embedded::default_classifier(&device).unwrap();
            let model = AttackModel::new(&clf, &device);
            let adv = Pgd::linf(eps)
                .perturb(&model, &set.images, &set.labels, None, 0)
                .unwrap();
            let v = d.defend(&adv, &device).unwrap();
            let transfer = v
                .iter()
                .zip(&set.labels)
                .filter(|(v, y)| v.evades(**y))
                .count() as f64
                / set.len() as f64;
            eprintln!("eps {eps}: transfer of PGD evades {transfer:.3}");
            assert!(
                r.evade_success >= transfer,
                "{} < {transfer}",
                r.evade_success
            );
        }
    }
    // No budget to speak of: the whole box.
    let r = run(1.0);
    assert!(
        r.evade_success >= 7.0 / 8.0,
        "unbounded success {}",
        r.evade_success
    );
}

#[test]
fn targeted_evade_runs_add_to_untargeted_ones() {
    let device = default_device();
    let d = small_defender();
    let set = held_out(16);
    let run = |targets: usize| {
        let cfg = AdaptiveConfig {
            iterations: 30,
            lambdas: vec![1.0, 10.0],
            targets,
            ..AdaptiveConfig::new(Norm::Linf, 0.25)
        };
        adaptive_attack(&d, &set, &cfg, &device).unwrap()
    };
    let (u, t) = (run(0), run(2));
    eprintln!(
        "Linf 0.25: evade {:.3} untargeted, {:.3} with 2 targets",
        u.evade_success, t.evade_success
    );
    assert!(t.max_perturbation <= 0.25 + 1e-6);
    // The per-image file agrees with the summary; the untargeted run's verdicts stand in for
    // the transfer's, so the worst case is the images neither run broke.
    let row = AdaptiveRow::new(t.clone(), u.verdicts.clone(), &set.labels).unwrap();
    assert!(AdaptiveRow::new(t.clone(), u.verdicts[1..].to_vec(), &set.labels).is_err());
    let csv = adaptive_images_csv(std::slice::from_ref(&row), &set);
    let lines: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(lines.len(), set.len());
    let evaded = lines.iter().filter(|l| l[6] == "1").count();
    assert_eq!(evaded as f64 / set.len() as f64, t.evade_success);
    let by_transfer = lines.iter().filter(|l| l[10] == "1").count();
    assert_eq!(by_transfer as f64 / set.len() as f64, u.evade_success);
    let neither = lines.iter().filter(|l| l[6] == "0" && l[10] == "0").count();
    let worst = row.worst_robust_accuracy_reject.unwrap();
    assert_eq!(neither as f64 / set.len() as f64, worst);
    assert!(worst <= t.robust_accuracy_reject.min(u.robust_accuracy_reject));
    assert!(
        lines
            .iter()
            .all(|l| l[7].parse::<f64>().unwrap() <= 0.25 + 1e-6)
    );
    // The targeted runs start from the images the untargeted ones left, and here (seeded)
    // break one more of the 16: the objective whose class term does not jump at the boundary.
    assert!(
        t.evade_success > u.evade_success,
        "targeted runs added nothing: {} vs {}",
        t.evade_success,
        u.evade_success
    );
}

#[test]
fn runs_from_the_transfer_examples_break_what_they_break() {
    let device = default_device();
    let d = small_defender();
    let set = held_out(16);
    let eps = 2.0;
    let cfg = AdaptiveConfig {
        iterations: 10,
        lambdas: vec![1.0, 10.0],
        ..AdaptiveConfig::new(Norm::L2, eps)
    };
    let (clf, _) = embedded::default_classifier(&device).unwrap();
    let model = AttackModel::new(&clf, &device);
    // The transfer examples evaluate_adaptive makes.
    let transfer = transfer_pgd(Norm::L2, eps)
        .perturb(&model, &set.images, &set.labels, None, 0)
        .unwrap();
    let tv = d.defend(&transfer, &device).unwrap();
    let plain = adaptive_attack(&d, &set, &cfg, &device).unwrap();
    let from = adaptive_attack_from(&d, &set, Some(&transfer), &cfg, &device).unwrap();
    let broken = |v: &[defed::defense::Verdict]| {
        v.iter()
            .zip(&set.labels)
            .map(|(v, &y)| v.evades(y))
            .collect::<Vec<_>>()
    };
    let (t, p, f) = (broken(&tv), broken(&plain.verdicts), broken(&from.verdicts));
    let count = |b: &[bool]| b.iter().filter(|&&x| x).count();
    eprintln!(
        "L2 {eps}: transfer evades {}, adaptive {}, adaptive from the transfer {} of 16",
        count(&t),
        count(&p),
        count(&f)
    );
    assert!(count(&t) > 0, "the transfer breaks nothing: no test");
    for i in 0..set.len() {
        assert!(
            f[i] || !(t[i] || p[i]),
            "image {i}: transfer {} adaptive {} but not the runs from the transfer",
            t[i],
            p[i]
        );
    }
    assert!(from.max_perturbation <= eps as f64 + 1e-4);
    // Starts outside the ball are projected onto it; a start per image is required.
    let far = vec![1.0f32; set.images.len()];
    let r = adaptive_attack_from(&d, &set, Some(&far), &cfg, &device).unwrap();
    assert!(r.max_perturbation <= eps as f64 + 1e-4);
    assert!(adaptive_attack_from(&d, &set, Some(&far[1..]), &cfg, &device).is_err());
}
