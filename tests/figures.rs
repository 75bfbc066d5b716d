//! The charts, rendered from fixed data and checked for what a reader needs: titles, axis
//! labels, legend entries and cell values (in the SVG, where text stays text), a decodable
//! PNG of the right size, and an HTML report that inlines them. Set `DEFED_FIGURE_DIR` to
//! keep the files for a look.

use defed::eval::charts::{Figure, read_figures, write_figures};
use serde_json::json;

fn out_dir(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = match std::env::var_os("DEFED_FIGURE_DIR") {
        Some(d) => std::path::PathBuf::from(d).join(name),
        None => tmp.path().join(name),
    };
    std::fs::create_dir_all(&dir).unwrap();
    (tmp, dir)
}

/// Writes the figure, checks the SVG holds every string and the PNG decodes at its size.
fn check(f: &Figure, dir: &std::path::Path, texts: &[&str]) -> String {
    write_figures(dir, std::slice::from_ref(f)).unwrap();
    let svg = std::fs::read_to_string(dir.join(format!("{}.svg", f.name))).unwrap();
    for t in texts {
        assert!(svg.contains(t), "{}: {t:?} missing from the SVG", f.name);
    }
    let png = image::open(dir.join(format!("{}.png", f.name))).unwrap();
    assert_eq!((png.width(), png.height()), f.size());
    // Not a blank canvas: text and lines put dark pixels on it.
    let dark = png.to_luma8().pixels().filter(|p| p.0[0] < 100).count();
    assert!(dark > 500, "{}: only {dark} dark pixels", f.name);
    assert_eq!(read_figures(dir).unwrap(), vec![f.clone()]);
    svg
}

#[test]
fn training_curves() {
    let (_t, dir) = out_dir("training");
    let mut p = defed::train::Progress::default();
    for e in 1..=6 {
        let e = e as f64;
        let mut log = std::collections::BTreeMap::new();
        log.insert("epoch".to_string(), e);
        log.insert("train_loss".to_string(), 1.0 / e);
        log.insert("val_loss".to_string(), 1.2 / e);
        log.insert("val_accuracy".to_string(), 0.9 + e / 100.0);
        log.insert("val_robust_accuracy".to_string(), 0.5 + e / 20.0);
        log.insert("lr".to_string(), 0.001);
        p.history.push(log);
    }
    p.best_epoch.insert("val_robust_accuracy".into(), 5);
    let f = defed::train::training_figure("run", &p);
    assert_eq!(f.panels.len(), 2, "losses and accuracies, no PSNR panel");
    let svg = check(
        &f,
        &dir,
        &[
            "Losses",
            "Accuracy and SSIM",
            "epoch",
            "train_loss",
            "val_loss",
            "val_robust_accuracy",
            "best val_robust_accuracy",
        ],
    );
    assert!(!svg.contains(">lr<"), "the learning rate is not a loss");
}

#[test]
fn attack_sweep_and_strong_suite() {
    let (_t, dir) = out_dir("attacks");
    let stat = |name: &str, norm: &str, eps: f64, rate: f64| {
        json!({"attack": format!("{name} eps={eps}"), "norm": norm, "eps": eps, "attempted": 100,
               "succeeded": (rate * 100.0) as usize, "success_rate": rate, "seconds": 1.0,
               "seconds_per_image": 0.01, "mean_l0": 300.0, "mean_l1": 20.0 * eps,
               "mean_l2": 3.0 * eps, "mean_linf": eps, "evaluations_per_image": 10.0, "seed": 0})
    };
    let stats: Vec<defed::attack::AttackStats> = serde_json::from_value(json!([
        stat("PGD-Linf", "Linf", 0.1, 0.3),
        stat("PGD-Linf", "Linf", 0.2, 0.8),
        stat("PGD-Linf", "Linf", 0.3, 1.0),
        stat("FGSM-Linf", "Linf", 0.1, 0.2),
        stat("FGSM-Linf", "Linf", 0.3, 0.7),
    ]))
    .unwrap();
    let f = defed::eval::figures::sweep_figure(&stats).unwrap();
    check(
        &f,
        &dir,
        &[
            "Attack success over the budget",
            "success rate",
            "PGD-Linf",
            "FGSM-Linf",
            "eps",
        ],
    );
    assert!(defed::eval::figures::sweep_figure(&stats[..1]).is_none());

    let report = |eps: f64, robust: f64| {
        json!({"norm": "Linf", "eps": eps, "images": 1000, "clean_accuracy": 0.98,
               "robust_accuracy": robust, "stages": [
                   {"attack": format!("APGD-CE-Linf eps={eps}"), "attempted": 980, "broken": 10,
                    "robust_accuracy": robust + 0.01, "seconds": 1.0},
                   {"attack": format!("Square-Linf eps={eps}"), "attempted": 970, "broken": 10,
                    "robust_accuracy": robust, "seconds": 1.0}]})
    };
    let reports: Vec<defed::attack::StrongReport> = serde_json::from_value(json!([
        report(0.3, 0.89),
        report(0.1, 0.96),
        report(0.2, 0.94)
    ]))
    .unwrap();
    let f = defed::eval::figures::strong_figure(&reports).unwrap();
    check(
        &f,
        &dir,
        &[
            "Strong suite, Linf (1000 images)",
            "accuracy under attack",
            "after APGD-CE-Linf",
            "after Square-Linf",
            "worst case",
        ],
    );
}

#[test]
fn adaptive_robust_accuracy() {
    let (_t, dir) = out_dir("adaptive");
    let row = |norm: &str, eps: f64, reject: f64| {
        json!({"norm": norm, "eps": eps, "images": 100, "evade_success": 1.0 - reject,
               "flagged": 0.3, "wrong_label": 0.4, "robust_accuracy_reject": reject,
               "robust_accuracy_correct": reject - 0.2, "robust_accuracy": reject,
               "policy": "reject", "seconds": 10.0, "max_perturbation": eps,
               "transfer_evade_success": 0.05, "transfer_flagged": 0.5, "transfer_wrong_label": 0.1})
    };
    let rows: Vec<defed::eval::adaptive::AdaptiveRow> = serde_json::from_value(json!([
        row("Linf", 0.1, 0.99),
        row("Linf", 0.3, 0.9),
        row("L2", 2.0, 0.8)
    ]))
    .unwrap();
    let f = defed::eval::figures::adaptive_figure(&rows).unwrap();
    assert_eq!(f.panels.len(), 2, "one panel per norm");
    check(
        &f,
        &dir,
        &[
            "Defended accuracy, Linf (100 images)",
            "Defended accuracy, L2",
            "robust accuracy",
            "adaptive, reject policy",
            "adaptive, correct policy",
            "transfer, reject policy",
            "transfer, correct policy",
        ],
    );
}

/// A browser for the HTML test: `$DEFED_CHROMIUM`, else `chromium` or `chromium-browser` on
/// the PATH.
fn chromium() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("DEFED_CHROMIUM") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

#[test]
fn html_report_opens_in_a_browser() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: no chromium on the PATH (apt-get install chromium; .ci/run installs it)"
        );
        return;
    };
    let (_t, dir) = out_dir("html");
    let rows: Vec<defed::eval::adaptive::AdaptiveRow> = serde_json::from_value(json!([
        {"norm": "Linf", "eps": 0.1, "images": 10, "evade_success": 0.0, "flagged": 0.3,
         "wrong_label": 0.1, "robust_accuracy_reject": 1.0, "robust_accuracy_correct": 0.9,
         "robust_accuracy": 1.0, "policy": "reject", "seconds": 1.0, "max_perturbation": 0.1,
         "transfer_evade_success": 0.0, "transfer_flagged": 0.2, "transfer_wrong_label": 0.1},
        {"norm": "Linf", "eps": 0.3, "images": 10, "evade_success": 0.1, "flagged": 0.5,
         "wrong_label": 0.3, "robust_accuracy_reject": 0.9, "robust_accuracy_correct": 0.7,
         "robust_accuracy": 0.9, "policy": "reject", "seconds": 1.0, "max_perturbation": 0.3,
         "transfer_evade_success": 0.0, "transfer_flagged": 0.4, "transfer_wrong_label": 0.2}
    ]))
    .unwrap();
    let mut p = defed::train::Progress::default();
    for e in 1..=3 {
        let mut log = std::collections::BTreeMap::new();
        log.insert("epoch".to_string(), e as f64);
        log.insert("val_loss".to_string(), 1.0 / e as f64);
        log.insert("val_psnr".to_string(), 20.0 + e as f64);
        p.history.push(log);
    }
    let figures = vec![
        defed::eval::figures::adaptive_figure(&rows).unwrap(),
        defed::train::training_figure("training", &p),
    ];
    write_figures(&dir, &figures).unwrap();
    std::fs::write(
        dir.join("report.md"),
        format!(
            "# A report\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n## Figures\n\n{}",
            defed::eval::charts::markdown(&figures)
        ),
    )
    .unwrap();
    // `defed report` redraws the figures and writes the page.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_defed"))
        .arg("report")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 figures redrawn"));
    let page = dir.join("index.html");
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let run = |extra: &[&str]| {
        std::process::Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1400,2200",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let o = run(&["--dump-dom"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = String::from_utf8_lossy(&o.stdout);
    assert!(
        dom.contains("<h1>A report</h1>"),
        "the page did not load: {dom:.500}"
    );
    assert_eq!(dom.matches("<svg").count(), 2, "both charts in the DOM");
    for t in ["adaptive, reject policy", "Losses", "PSNR", "<table>"] {
        assert!(dom.contains(t), "{t} not in the rendered page");
    }
    let log = String::from_utf8_lossy(&o.stderr);
    for bad in [
        "Uncaught",
        "ERR_FILE_NOT_FOUND",
        "Failed to load resource",
        "CONSOLE",
    ] {
        assert!(!log.contains(bad), "browser reported {bad}: {log}");
    }
    let shot = dir.join("screenshot.png");
    let o = run(&[&format!("--screenshot={}", shot.display())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The screenshot shows content: many non-white pixels.
    let img = image::open(&shot).unwrap().to_luma8();
    let inked = img.pixels().filter(|p| p.0[0] < 200).count();
    assert!(
        inked > 20_000,
        "screenshot nearly blank ({inked} inked pixels)"
    );
}
