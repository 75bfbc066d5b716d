//! The defender against the original: scores equal the original's, and the headline figures
//! of the {20, 60, 100} defender are reproduced.

mod common;

use std::path::{Path, PathBuf};

use defed::attack::load_adv_npy;
use defed::defense::{Defender, Scores, decide_with, flag_rate, thresholds_k_std};
use defed::io::read_npz;
use defed::model::LoadOptions;

fn defender(sh: &Path, noises: &[u32]) -> Defender {
    let ck = sh.join("reference/checkpoints/pytorch");
    let files: Vec<PathBuf> = noises
        .iter()
        .map(|n| ck.join(format!("mnist-laplacian-alpha=1-noise={n}.pth")))
        .collect();
    Defender::from_checkpoints(
        &ck.join("mnist-classifier.pth"),
        &files,
        1.0,
        &defed::default_device(),
        &LoadOptions::default(),
    )
    .unwrap()
}

/// Gap between the two largest logits of the classifier on each image, and the runner-up.
fn top2_gaps(d: &Defender, x: &[f32]) -> Vec<(f32, usize)> {
    let m = defed::attack::AttackModel::new(&d.classifier, &defed::default_device());
    m.logits(x)
        .chunks(10)
        .map(|z| {
            let mut idx: Vec<usize> = (0..10).collect();
            idx.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
            (z[idx[0]] - z[idx[1]], idx[1])
        })
        .collect()
}

/// The score of every image under denoiser `i`, with the runner-up class in place of the
/// classifier's prediction where the two tie.
fn tie_scores(s: &Scores, i: usize, gaps: &[(f32, usize)]) -> Vec<f32> {
    (0..s.len())
        .map(|j| {
            let (gap, second) = gaps[j];
            if gap < 1e-5 {
                -s.probs[i][j * 10 + second].max(1e-30).ln() + s.vision[i][j]
            } else {
                s.total[i][j]
            }
        })
        .collect()
}

/// Scores agree to 1e-4 relative, with an absolute floor of 5e-7 (the float32 resolution of
/// the smallest benign scores, about 4e-4). Where the classifier's two top logits tie to within
/// 1e-5 (DeepFool images sit exactly on the boundary), the score's `argmax C(x)` depends on
/// float summation order, so the score with the runner-up class (`alt`) is accepted too.
fn assert_scores(name: &str, s: &Scores, i: usize, want: &[f32], gaps: &[(f32, usize)]) {
    let got = &s.total[i];
    let alt = tie_scores(s, i, gaps);
    assert_eq!(got.len(), want.len(), "{name}");
    let mut worst = 0f64;
    let mut ties = 0;
    for j in 0..want.len() {
        let tol = 1e-4 * want[j].abs() as f64 + 5e-7;
        let err = ((got[j] - want[j]).abs() as f64 / tol).min(if gaps[j].0 < 1e-5 {
            (alt[j] - want[j]).abs() as f64 / (1e-3 * want[j].abs() as f64 + 5e-7)
        } else {
            f64::INFINITY
        });
        if gaps[j].0 < 1e-5 && (got[j] - want[j]).abs() as f64 > tol {
            ties += 1;
        }
        worst = worst.max(err);
    }
    eprintln!(
        "{name}: worst error {worst:.3} of tolerance; {ties} boundary ties resolved the other way"
    );
    assert!(worst <= 1.0, "{name}: error {worst} x tolerance");
}

#[test]
fn scores_match_and_headline_figures_reproduce() {
    let Some(sh) = common::shared() else { return };
    let dev = defed::default_device();
    let d = defender(&sh, &[20, 60, 100]);
    let adv_dir = sh.join("reference/adversarial");
    let benign = defed::io::read_npy(adv_dir.join("benign_images.npy"))
        .unwrap()
        .to_f32();
    let pgd = load_adv_npy(&adv_dir, "PGDLinf-Eps=0.3").unwrap();
    let df = load_adv_npy(&adv_dir, "DeepFool").unwrap();
    let s_benign = d.scores_batched(&benign, 250, &dev).unwrap();
    let s_pgd = d.scores_batched(&pgd.adv, 250, &dev).unwrap();
    let s_df = d.scores_batched(&df.adv, 250, &dev).unwrap();
    let (g_benign, g_pgd, g_df) = (
        top2_gaps(&d, &benign),
        top2_gaps(&d, &pgd.adv),
        top2_gaps(&d, &df.adv),
    );
    for (i, n) in [20, 60, 100].iter().enumerate() {
        let r = read_npz(sh.join(format!(
            "reference/scores/adv_scores_laplacian_noise{n}.npz"
        )))
        .unwrap();
        assert_scores(
            &format!("n{n} benign"),
            &s_benign,
            i,
            &r["benign"].to_f32(),
            &g_benign,
        );
        assert_scores(
            &format!("n{n} pgd"),
            &s_pgd,
            i,
            &r["PGDLinf-Eps=0.3"].to_f32(),
            &g_pgd,
        );
        assert_scores(
            &format!("n{n} deepfool"),
            &s_df,
            i,
            &r["DeepFool"].to_f32(),
            &g_df,
        );
    }

    // Thresholds from benign images 0-499, k = 2; measured on 500-999.
    let pick = |s: &Scores, r: std::ops::Range<usize>| Scores {
        total: s.total.iter().map(|t| t[r.clone()].to_vec()).collect(),
        class: s.class.iter().map(|t| t[r.clone()].to_vec()).collect(),
        vision: s.vision.iter().map(|t| t[r.clone()].to_vec()).collect(),
        pred: s.pred[r.clone()].to_vec(),
        probs: s
            .probs
            .iter()
            .map(|t| t[r.start * 10..r.end * 10].to_vec())
            .collect(),
    };
    let t = thresholds_k_std(&pick(&s_benign, 0..500), 2.0);
    let held = pick(&s_benign, 500..1000);
    let pass = 1.0 - flag_rate(&held, &t);
    eprintln!("benign pass rate {:.3}", pass);
    assert!((pass - 0.976).abs() < 0.0015, "benign pass {pass}");
    for (name, s, set, want_acc) in [("PGD", &s_pgd, &pgd, 0.717), ("DeepFool", &s_df, &df, 1.0)] {
        let v = decide_with(s, &t, 10);
        let flagged = v.iter().filter(|v| v.adversarial).count() as f64 / v.len() as f64;
        let correct = v
            .iter()
            .zip(&set.benign.labels)
            .filter(|(v, l)| v.label == **l)
            .count() as f64
            / v.len() as f64;
        eprintln!("{name}: flagged {flagged:.3}, corrected accuracy {correct:.3}");
        assert_eq!(flagged, 1.0, "{name}");
        assert!(
            (correct - want_acc).abs() < 0.006,
            "{name}: corrected accuracy {correct}"
        );
    }
}

#[test]
fn other_denoisers_scores_match() {
    let Some(sh) = common::shared() else { return };
    let dev = defed::default_device();
    let ck = sh.join("reference/checkpoints/pytorch");
    let adv_dir = sh.join("reference/adversarial");
    let benign = defed::io::read_npy(adv_dir.join("benign_images.npy"))
        .unwrap()
        .to_f32();
    let first = &benign[..200 * 784];
    let df = load_adv_npy(&adv_dir, "DeepFool").unwrap();
    for (file, scores) in [
        (
            "mnist-laplacian-alpha=1-noise=0.pth",
            "adv_scores_laplacian_noise0.npz",
        ),
        (
            "mnist-laplacian-alpha=1-noise=40.pth",
            "adv_scores_laplacian_noise40.npz",
        ),
        (
            "mnist-laplacian-alpha=1-noise=80.pth",
            "adv_scores_laplacian_noise80.npz",
        ),
        (
            "mnist-laplacian-alpha=1-noise=120.pth",
            "adv_scores_laplacian_noise120.npz",
        ),
        (
            "mnist-sobel-alpha=1-noise=40.pth",
            "adv_scores_sobel_noise40.npz",
        ),
        (
            "mnist-basenet-alpha=1-noise=40.pth",
            "adv_scores_basenet_noise40.npz",
        ),
    ] {
        let d = Defender::from_checkpoints(
            &ck.join("mnist-classifier.pth"),
            &[ck.join(file)],
            1.0,
            &dev,
            &LoadOptions::default(),
        )
        .unwrap();
        let r = read_npz(sh.join("reference/scores").join(scores)).unwrap();
        let s = d.scores_batched(first, 200, &dev).unwrap();
        let g = top2_gaps(&d, first);
        assert_scores(
            &format!("{file} benign"),
            &s,
            0,
            &r["benign"].to_f32()[..200],
            &g,
        );
        let s = d.scores_batched(&df.adv, 200, &dev).unwrap();
        let g = top2_gaps(&d, &df.adv);
        assert_scores(
            &format!("{file} deepfool"),
            &s,
            0,
            &r["DeepFool"].to_f32(),
            &g,
        );
    }
}

#[test]
fn bundle_roundtrip() {
    let Some(sh) = common::shared() else { return };
    let dev = defed::default_device();
    let mut d = defender(&sh, &[20, 60]);
    d.thresholds = Some(vec![0.01, 0.02]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.safetensors");
    d.save(&p).unwrap();
    let e = Defender::load(&p, &dev).unwrap();
    assert_eq!(e.thresholds, d.thresholds);
    assert_eq!(e.denoisers.len(), 2);
    assert_eq!(e.denoisers[1].meta.noise, Some(60.0));
    let x = defed::io::read_npy(sh.join("reference/fixtures/mnist_x.npy"))
        .unwrap()
        .to_f32();
    let a = d.scores(&x, &dev).unwrap();
    let b = e.scores(&x, &dev).unwrap();
    assert_eq!(a.total, b.total);
    // A plain checkpoint is not a bundle.
    let err = Defender::load(
        sh.join("reference/checkpoints/safetensors/mnist_lenet.safetensors"),
        &dev,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a defender bundle"), "{err}");
}
