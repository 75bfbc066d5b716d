//! The main job: `defed pipeline` on the embedded data and models, scaled down.

#[test]
fn pipeline_runs_end_to_end_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_defed"))
        .args([
            "pipeline",
            "--benign",
            "160",
            "--calibration",
            "100",
            "--attacked",
            "20",
            "--adaptive",
            "4",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("report:"), "{stdout}");
    for f in [
        "report.md",
        "results.csv",
        "results.json",
        "attacks.csv",
        "benign.npz",
        "defender.safetensors",
        "roc.png",
        "roc.svg",
        "detection-k2.png",
        "detection-k2.svg",
        "examples.png",
        "examples.svg",
        "figures.json",
        "index.html",
        "adaptive.csv",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    // The shipped classifier is right on most held-out digits.
    assert!(r["classifier_accuracy"].as_f64().unwrap() > 0.95);
    let h = &r["headline"];
    let pass = h["benign_pass"].as_f64().unwrap();
    // k = 2 on held-out benign images: most pass, but not all (thresholds are not fitted on them).
    assert!((0.75..=1.0).contains(&pass), "benign pass {pass}");
    // Every attack is evaluated, and PGD-Linf 0.3 is both strong and mostly flagged.
    let attacks = h["attacks"].as_array().unwrap();
    assert!(attacks.len() >= 6, "{attacks:?}");
    let pgd = attacks
        .iter()
        .find(|a| a["attack"] == "PGD-Linf eps=0.3")
        .unwrap();
    assert!(pgd["detection"].as_f64().unwrap() > 0.5, "{pgd}");
    // The adaptive attack ran on the bundle at both budgets, inside them.
    let adaptive = r["adaptive"].as_array().unwrap();
    assert_eq!(adaptive.len(), 2);
    assert!(adaptive[0]["max_perturbation"].as_f64().unwrap() <= 0.3 + 1e-6);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Adaptive attack"), "{md}");
    check_figures(&out, h);
    // The calibrated bundle loads and defends.
    let d =
        defed::defense::Defender::load(out.join("defender.safetensors"), &defed::default_device())
            .unwrap();
    let thresholds = d.thresholds.clone().unwrap();
    // The report's calibration spread is the bundle's: its k = 2 thresholds, from the same 100
    // calibration digits, and the trimmed ones below them.
    assert!(md.contains("### What sets the k = 2 thresholds"), "{md}");
    let spread = r["calibration_spread"].as_array().unwrap();
    assert_eq!(spread.len(), thresholds.len());
    for (s, t) in spread.iter().zip(&thresholds) {
        let k2 = s["threshold_k2"].as_f64().unwrap();
        assert!((k2 - *t as f64).abs() <= 1e-6 * (1.0 + k2), "{s} vs {t}");
        assert_eq!(s["images"], 100);
        assert!(s["threshold_k2_trimmed"].as_f64().unwrap() <= k2, "{s}");
        assert!(
            s["median"].as_f64().unwrap() <= s["p95"].as_f64().unwrap(),
            "{s}"
        );
    }

    // The robust defender ran beside it: its own folder, bundle and adaptive run, and the
    // side-by-side table in the main report.
    for f in [
        "report.md",
        "defender.safetensors",
        "results.csv",
        "roc.png",
    ] {
        assert!(out.join("robust").join(f).exists(), "robust/{f} missing");
    }
    let robust = &r["robust"];
    assert!(
        robust["classifier_source"]
            .as_str()
            .unwrap()
            .contains("madry")
    );
    assert!(robust["classifier_accuracy"].as_f64().unwrap() > 0.9);
    assert_eq!(robust["adaptive"].as_array().unwrap().len(), 2);
    assert!(
        md.contains("## The paper's defender beside the robust one"),
        "{md}"
    );
    let rd = defed::defense::Defender::load(
        out.join("robust/defender.safetensors"),
        &defed::default_device(),
    )
    .unwrap();
    assert_eq!(rd.classifier.architecture().name(), "madry-cnn");
}

/// The figures show what the results say: ROC legend entries are the attacks, the detection
/// heat-map's cells hold the table's values, the examples are labelled; the Markdown lists the
/// figures (not an indented code block) and the HTML inlines every one of them.
fn check_figures(out: &std::path::Path, headline: &serde_json::Value) {
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let roc = read("roc.svg");
    let heat = read("detection-k2.svg");
    for a in headline["attacks"].as_array().unwrap() {
        let name = a["attack"].as_str().unwrap();
        assert!(roc.contains(name), "ROC legend lacks {name}");
        assert!(heat.contains(name), "heat-map lacks the row {name}");
        let cell = format!("\n{:.1}\n", 100.0 * a["detection"].as_f64().unwrap());
        assert!(
            heat.contains(&cell),
            "heat-map lacks the value {cell} of {name}"
        );
    }
    for t in ["false-positive rate", "detection rate", "chance", "AUC"] {
        assert!(roc.contains(t), "ROC lacks {t}");
    }
    let examples = read("examples.svg");
    for t in [
        "benign",
        "adversarial",
        "denoised by",
        "data:image/png;base64,",
    ] {
        assert!(examples.contains(t), "examples lack {t}");
    }
    let md = read("report.md");
    let figures = md.split("## Figures").nth(1).unwrap();
    assert!(figures.trim_start().starts_with("- `roc.png`"), "{figures}");
    assert!(
        !figures.lines().any(|l| l.starts_with("    ")),
        "indented (code-block) lines in the Figures list"
    );
    let html = read("index.html");
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("figures.json")).unwrap()).unwrap();
    let robust: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("robust/figures.json")).unwrap()).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        listed.len() + robust.len(),
        "every figure of both defenders inline"
    );
    for bad in ["<script", "src=\"http", "href=\"http", "<img"] {
        assert!(!html.contains(bad), "the page is not self-contained: {bad}");
    }
}

mod common;

/// Stages 1-5 on 3 x 32 x 32 images with the authors' SVHN classifier and SVHN Defed (from
/// `../shared`), then the pipeline's RGB bundle given an RGB PNG decoded as `defed serve`
/// decodes request bodies. Real SVHN
/// is not on this machine: the images are the embedded digits in colour (random foreground
/// and background colours, padded to 32 x 32), labelled by the SVHN classifier itself, so
/// that the run exercises every stage on SVHN-shaped data (its accuracies say nothing about
/// SVHN).
#[test]
fn pipeline_runs_on_svhn_shaped_data_with_the_authors_models() {
    let Some(shared) = common::shared() else {
        return;
    };
    let ck = shared.join("reference/checkpoints/pytorch");
    let device = defed::default_device();
    let (clf, _) = defed::model::load_classifier(ck.join("svhn-classifier.pth"), &device).unwrap();
    // Labelled by the classifier itself (the digit labels are not SVHN's).
    let unlabelled = common::colour_digits(400, 3);
    let labels = defed::eval::predict(&clf, &unlabelled, 200, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("svhn-shaped.npz");
    defed::io::write_npz(
        &npz,
        [
            (
                "x",
                &defed::io::NpyArray::f32(vec![400, 3, 32, 32], unlabelled.images.clone()),
            ),
            (
                "y",
                &defed::io::NpyArray::i64(vec![400], labels.iter().map(|&l| l as i64).collect()),
            ),
        ],
    )
    .unwrap();
    let out = dir.path().join("report");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_defed"))
        .args(["pipeline", "--dataset"])
        .arg(&npz)
        .arg("--classifier")
        .arg(ck.join("svhn-classifier.pth"))
        .arg("--denoisers")
        .arg(ck.join("svhn-laplacian-alpha=1-noise=40.pth"))
        .args([
            "--benign",
            "200",
            "--calibration",
            "120",
            "--attacked",
            "20",
            "--adaptive",
            "2",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("robust defender is skipped"), "{stderr}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("svhn-shaped.npz"), "{md}");
    // The colour budgets: Linf 8/255.
    assert!(md.contains("PGD-Linf eps=8/255"), "{md}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["classifier_accuracy"], 1.0);
    let attacks = results["attacks"].as_array().unwrap();
    assert_eq!(attacks.len(), 8);
    assert!(
        attacks
            .iter()
            .any(|a| a["success_rate"].as_f64().unwrap() > 0.5),
        "{attacks:?}"
    );
    assert!(results["headline"]["benign_pass"].as_f64().unwrap() > 0.5);
    // The bundle takes RGB images, and `defed defend` reads it.
    let (bundle, _) = (out.join("defender.safetensors"), ());
    let d = defed::defense::Defender::load(&bundle, &device).unwrap();
    assert_eq!(d.input_shape(), [3, 32, 32]);
    let img = image::RgbImage::from_fn(32, 32, |x, y| {
        let p = |c: usize| {
            (unlabelled.image(0)[c * 1024 + y as usize * 32 + x as usize] * 255.0).round() as u8
        };
        image::Rgb([p(0), p(1), p(2)])
    });
    let mut png = Vec::new();
    image::DynamicImage::from(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let pixels = defed::serve::decode::image_bytes(&png, [3, 32, 32]).unwrap();
    let v = d.defend(&pixels, &device).unwrap();
    assert_eq!(v.len(), 1);
    let want = d.defend(unlabelled.image(0), &device).unwrap();
    assert_eq!(v[0].classifier_label, want[0].classifier_label);
}
