//! The command line as a user runs it.

use std::process::Command;

fn defed(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_defed"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn main_job_classifies_the_held_out_embedded_digits() {
    let (ok, out, err) = defed(&[
        "classify",
        "--classifier",
        "models/lenet-mnist.safetensors",
        "--dataset",
        "mnist-embedded:val",
        "--summary",
    ]);
    assert!(ok, "{err}");
    let pct: f64 = out
        .trim()
        .strip_prefix("accuracy ")
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    assert!(pct > 95.0, "{out}");
    assert!(out.contains("/1000)"), "{out}");
}

#[test]
fn inspect_shows_metadata() {
    let (ok, out, err) = defed(&["inspect", "models/lenet-mnist.safetensors"]);
    assert!(ok, "{err}");
    assert!(out.contains("architecture  lenet"), "{out}");
    assert!(
        out.contains("fc1.weight") && out.contains("[120, 256]"),
        "{out}"
    );
    let (ok, out, _) = defed(&["inspect", "--json", "models/lenet-mnist.safetensors"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["metadata"]["architecture"], "lenet");
}

#[test]
fn original_lenet_accuracy_line() {
    let sh = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if !sh.join("reference").is_dir() {
        eprintln!("SKIPPED: ../shared is absent");
        return;
    }
    let (ok, out, err) = defed(&[
        "classify",
        "--classifier",
        "../shared/reference/checkpoints/pytorch/mnist-classifier.pth",
        "../shared/data/mnist/t10k-images-idx3-ubyte.gz",
        "--labels",
        "../shared/data/mnist/t10k-labels-idx1-ubyte.gz",
        "--summary",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "accuracy 99.09% (9909/10000)");
}

#[test]
fn errors_are_messages_not_panics() {
    for args in [
        vec![
            "classify",
            "--classifier",
            "no/such/file.safetensors",
            "x.png",
        ],
        vec!["inspect", "Cargo.toml"],
        vec![
            "classify",
            "--classifier",
            "models/lenet-mnist.safetensors",
            "Cargo.toml",
        ],
        vec![
            "classify",
            "--classifier",
            "models/lenet-mnist.safetensors",
            "--dataset",
            "nope",
        ],
        vec!["data", "download", "imagenet"],
        // A selection floor without the selection it belongs to.
        vec![
            "train",
            "denoiser",
            "--classifier",
            "models/lenet-mnist.safetensors",
            "--detect-min-psnr",
            "19",
            "--out",
            "unused",
        ],
        // A non-finite floor: refused before any training.
        vec![
            "train",
            "denoiser",
            "--classifier",
            "models/lenet-mnist.safetensors",
            "--detect",
            "--detect-min-psnr",
            "nan",
            "--out",
            "unused",
        ],
    ] {
        let (ok, _, err) = defed(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn benign_attack_bundle_calibrate_defend_evaluate() {
    let sh = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if !sh.join("reference").is_dir() {
        eprintln!("SKIPPED: ../shared is absent");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).display().to_string();
    let ck = "../shared/reference/checkpoints/pytorch";
    let clf = format!("{ck}/mnist-classifier.pth");
    let (ok, out, err) = defed(&[
        "benign",
        "--classifier",
        &clf,
        "--images",
        "../shared/data/mnist/t10k-images-idx3-ubyte.gz",
        "--labels",
        "../shared/data/mnist/t10k-labels-idx1-ubyte.gz",
        "--num",
        "120",
        "--out",
        &p("benign.npz"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("kept 120"), "{out}");
    let (ok, out, err) = defed(&[
        "attack",
        "--classifier",
        &clf,
        "--benign",
        &p("benign.npz"),
        "--attack",
        "pgd",
        "--norm",
        "linf",
        "--eps",
        "0.1",
        "0.3",
        "--num",
        "40",
        "--out",
        &p("adv"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("PGD-Linf eps=0.3"), "{out}");
    let summary = std::fs::read_to_string(dir.path().join("adv/summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 3, "{summary}");
    let (ok, _, err) = defed(&[
        "bundle",
        "--classifier",
        &clf,
        "--denoisers",
        &format!("{ck}/mnist-laplacian-alpha=1-noise=20.pth"),
        &format!("{ck}/mnist-laplacian-alpha=1-noise=100.pth"),
        "--out",
        &p("b.safetensors"),
    ]);
    assert!(ok, "{err}");
    // Not calibrated yet: defend refuses with a message.
    let (ok, _, err) = defed(&[
        "defend",
        "--bundle",
        &p("b.safetensors"),
        &p("adv/PGD-Linf_eps=0.3.npz"),
    ]);
    assert!(!ok && err.contains("not calibrated"), "{err}");
    let (ok, out, err) = defed(&[
        "calibrate",
        "--bundle",
        &p("b.safetensors"),
        "--benign",
        &p("benign.npz"),
        "--num",
        "60",
        "--k",
        "2",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("calibrated on 60"), "{out}");
    // Defend on a .npy of adversarial images written by numpy-compatible code.
    let adv = defed::attack::load_adv(dir.path().join("adv/PGD-Linf_eps=0.3.npz")).unwrap();
    let n = adv.src_idx.len();
    defed::io::write_npy(
        dir.path().join("x.npy"),
        &defed::io::NpyArray::f32(vec![n, 1, 28, 28], adv.adv.clone()),
    )
    .unwrap();
    let (ok, out, err) = defed(&[
        "defend",
        "--bundle",
        &p("b.safetensors"),
        &p("x.npy"),
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let flagged = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"]["adversarial"] == true)
        .count();
    assert!(flagged as f64 >= 0.9 * n as f64, "{flagged}/{n} flagged");
    // Under `correct` a flagged image gets its corrected label; recalibrated with `reject`,
    // defend withholds the label of every flagged image (in JSON, CSV and the table).
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["verdict"]["label"].is_u64())
    );
    let (ok, _, err) = defed(&[
        "calibrate",
        "--bundle",
        &p("b.safetensors"),
        "--benign",
        &p("benign.npz"),
        "--num",
        "60",
        "--k",
        "2",
        "--policy",
        "reject",
        "--out",
        &p("reject.safetensors"),
    ]);
    assert!(ok, "{err}");
    let defend = |format: &str| {
        let (ok, out, err) = defed(&[
            "defend",
            "--bundle",
            &p("reject.safetensors"),
            &p("x.npy"),
            "--format",
            format,
        ]);
        assert!(ok, "{err}");
        out
    };
    let v: serde_json::Value = serde_json::from_str(&defend("json")).unwrap();
    assert_eq!(v["policy"], "reject");
    for r in v["results"].as_array().unwrap() {
        let verdict = &r["verdict"];
        let flagged = verdict["adversarial"] == true;
        assert_eq!(verdict["rejected"], flagged, "{r}");
        assert_eq!(verdict["label"].is_null(), flagged, "{r}");
    }
    let csv = defend("csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), n);
    for row in rows {
        let cols: Vec<&str> = row.split(',').collect();
        // label is empty exactly when rejected
        assert_eq!(cols[1].is_empty(), cols[2] == "true", "{row}");
    }
    let table = defend("table");
    assert_eq!(table.matches("REJECTED").count(), flagged, "{table}");
    // The adversarial set's .npz is an input too (its adv array), with the same verdicts.
    let (ok, out, err) = defed(&[
        "defend",
        "--bundle",
        &p("reject.safetensors"),
        &p("adv/PGD-Linf_eps=0.3.npz"),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("{flagged} of {n} images flagged")),
        "{out}"
    );
    // Evaluating on the calibration images is refused without --allow-overlap.
    let (ok, _, err) = defed(&[
        "evaluate",
        "--bundle",
        &p("b.safetensors"),
        "--benign",
        &p("benign.npz"),
        "--calibration",
        "120",
        "--adv",
        &p("adv"),
        "--out",
        &p("rep"),
    ]);
    assert!(!ok && err.contains("--allow-overlap"), "{err}");
    let (ok, out, err) = defed(&[
        "evaluate",
        "--bundle",
        &p("b.safetensors"),
        "--benign",
        &p("benign.npz"),
        "--calibration",
        "60",
        "--adv",
        &p("adv"),
        "--k",
        "1",
        "2",
        "--fpr",
        "0.05",
        "--pairwise",
        "--out",
        &p("rep"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("| 20,100 | k=2 |"), "{out}");
    let csv = std::fs::read_to_string(dir.path().join("rep/results.csv")).unwrap();
    // header + (3 sets x 3 rules)
    assert_eq!(csv.lines().count(), 10, "{csv}");
    // The report says what sets the k = 2 thresholds: one row per denoiser, 60 calibration
    // images each.
    let md = std::fs::read_to_string(dir.path().join("rep/report.md")).unwrap();
    assert!(md.contains("### What sets the k = 2 thresholds"), "{md}");
    let spread_rows = md.lines().filter(|l| l.contains(" | 60 | ")).count();
    assert_eq!(spread_rows, 2, "{md}");
}

#[test]
fn defend_rejects_images_of_another_shape() {
    let dir = tempfile::tempdir().unwrap();
    // 49 images of 32x32 hold exactly as many values as 64 of 28x28: must still be refused.
    let x = defed::io::NpyArray::f32(vec![49, 1, 32, 32], vec![0.5; 49 * 1024]);
    defed::io::write_npy(dir.path().join("x.npy"), &x).unwrap();
    let out = dir.path().join("r");
    let o = Command::new(env!("CARGO_BIN_EXE_defed"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "pipeline",
            "--benign",
            "120",
            "--calibration",
            "60",
            "--attacked",
            "5",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let (ok, _, err) = defed(&[
        "defend",
        "--bundle",
        &out.join("defender.safetensors").display().to_string(),
        &dir.path().join("x.npy").display().to_string(),
    ]);
    assert!(
        !ok && err.contains("1x28x28") && err.contains("1x32x32"),
        "{err}"
    );
}

#[test]
fn strong_suite_and_adaptive_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).display().to_string();
    let clf = "models/lenet-mnist.safetensors";
    let (ok, _, err) = defed(&[
        "benign",
        "--classifier",
        clf,
        "--dataset",
        "mnist-embedded:val",
        "--num",
        "60",
        "--out",
        &p("benign.npz"),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = defed(&[
        "attack",
        "--classifier",
        clf,
        "--benign",
        &p("benign.npz"),
        "--num",
        "16",
        "--suite",
        "strong",
        "--eps",
        "0.3",
        "--out",
        &p("strong"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("APGD-CE-Linf eps=0.3"), "{out}");
    let csv = std::fs::read_to_string(dir.path().join("strong/strong.csv")).unwrap();
    let robust: f64 = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(4)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        robust <= 0.2,
        "undefended LeNet keeps {robust} robust accuracy at 0.3"
    );

    let (ok, _, err) = defed(&[
        "bundle",
        "--classifier",
        clf,
        "--denoisers",
        "models/defed-mnist-n60.safetensors",
        "--out",
        &p("b.safetensors"),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = defed(&[
        "calibrate",
        "--bundle",
        &p("b.safetensors"),
        "--benign",
        &p("benign.npz"),
        "--num",
        "40",
        "--k",
        "2",
        "--policy",
        "reject",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = defed(&[
        "evaluate",
        "--adaptive",
        "--bundle",
        &p("b.safetensors"),
        "--benign",
        &p("benign.npz"),
        "--num",
        "4",
        "--iterations",
        "10",
        "--lambdas",
        "1",
        "--budgets",
        "linf:0.3",
        "l2:3",
        "--out",
        &p("rep"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("Threat model: white-box"), "{out}");
    assert!(err.contains("policy reject"), "{err}");
    assert!(
        err.contains("20 held-out") || err.contains("4 held-out"),
        "{err}"
    );
    let csv = std::fs::read_to_string(dir.path().join("rep/adaptive.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.contains(",reject,"), "{csv}");
    let (ok, _, err) = defed(&[
        "evaluate",
        "--adaptive",
        "--bundle",
        &p("b.safetensors"),
        "--benign",
        &p("benign.npz"),
        "--budgets",
        "linf0.3",
    ]);
    assert!(!ok && err.contains("norm:eps"), "{err}");
}

#[test]
fn bench_writes_every_workload_and_devices_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let (ok, stdout, stderr) = defed(&[
        "bench",
        "--seconds",
        "0.1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let names: Vec<&str> = v["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "defed_train_step",
            "defed_lenet_inference",
            "lenet_input_gradient",
            "defender_latency",
            "madry_pgd10_train_step"
        ]
    );
    for w in v["workloads"].as_array().unwrap() {
        let rate = w["images_per_second"].as_f64().unwrap();
        assert!(rate.is_finite() && rate > 0.0, "{w}");
    }
    assert!(stdout.contains("defender_latency"));

    let (ok, _, stderr) = defed(&["--device", "tpu", "bench"]);
    assert!(!ok && stderr.contains("unknown device"), "{stderr}");
    if !cfg!(feature = "cuda") {
        let (ok, _, stderr) = defed(&["--device", "cuda:0", "bench"]);
        assert!(!ok && stderr.contains("--features cuda"), "{stderr}");
    }
    let (ok, _, stderr) = defed(&["bench", "--seconds=0"]);
    assert!(!ok && stderr.contains("positive"), "{stderr}");
}

#[test]
fn convert_to_half_keeps_the_robust_classifier_accurate() {
    let dir = tempfile::tempdir().unwrap();
    let f32_path = dir.path().join("lenet32.safetensors");
    let f16_path = dir.path().join("lenet16.safetensors");
    // float16 -> float32 is exact; float32 -> float16 rounds.
    let (ok, out, err) = defed(&[
        "convert",
        "models/madry-trades-mnist.safetensors",
        f32_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("largest weight change 0.000e0"), "{out}");
    let (ok, out, err) = defed(&[
        "convert",
        "models/lenet-mnist.safetensors",
        f16_path.to_str().unwrap(),
        "--half",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("float16"), "{out}");
    let size = std::fs::metadata(&f16_path).unwrap().len();
    let full = std::fs::metadata("models/lenet-mnist.safetensors")
        .unwrap()
        .len();
    assert!(size < full * 6 / 10, "{size} vs {full}");
    // The same accuracy on the held-out digits, to the image.
    let acc = |model: &str| {
        let (ok, out, err) = defed(&[
            "classify",
            "--classifier",
            model,
            "--dataset",
            "mnist-embedded:val",
            "--summary",
        ]);
        assert!(ok, "{err}");
        out
    };
    let a = acc("models/lenet-mnist.safetensors");
    let b = acc(f16_path.to_str().unwrap());
    assert_eq!(a, b);
    let (ok, _, err) = defed(&["convert", "Cargo.toml", f16_path.to_str().unwrap()]);
    assert!(!ok && err.contains("Cargo.toml"), "{err}");

    // Benign sets for robust accuracy: the first N images, clean errors included, or
    // correctly classified images from an offset.
    let first = dir.path().join("first.npz");
    let (ok, out, err) = defed(&[
        "benign",
        "--classifier",
        "models/madry-trades-mnist.safetensors",
        "--dataset",
        "mnist-embedded:val",
        "--num",
        "50",
        "--include-misclassified",
        "--out",
        first.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("kept images 0-49 (50, clean errors"), "{out}");
    let set = defed::attack::load_benign(&first).unwrap();
    assert_eq!(set.len(), 50);
    assert!(set.indices.windows(2).all(|w| w[0] < w[1]));
    let last_of_first = *set.indices.last().unwrap();
    let (ok, out, err) = defed(&[
        "benign",
        "--classifier",
        "models/madry-trades-mnist.safetensors",
        "--dataset",
        "mnist-embedded:val",
        "--num",
        "20",
        "--from",
        "900",
        "--out",
        first.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("kept 20 correctly classified images (of 2"),
        "{out}"
    );
    assert!(out.contains("tested from image 900)"), "{out}");
    let set = defed::attack::load_benign(&first).unwrap();
    assert!(
        set.indices.iter().all(|&i| i > last_of_first),
        "{:?}",
        set.indices
    );
}

/// The findings of the hardening review (issue 20: F3, F4 and the minor messages), each as a
/// user would hit it.
#[test]
fn hostile_files_and_labels_get_messages() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let lenet = "models/lenet-mnist.safetensors";
    // F3: an IDX header whose dimensions wrap around to 0 in 64 bits.
    std::fs::write(
        p("wrap.idx"),
        [0, 0, 8, 3, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 4],
    )
    .unwrap();
    let (ok, _, err) = defed(&["classify", "--classifier", lenet, &p("wrap.idx")]);
    assert!(
        !ok && err.contains("too large") && err.contains("wrap.idx"),
        "{err}"
    );
    // A zero dimension.
    std::fs::write(
        p("zero.idx"),
        [0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 28],
    )
    .unwrap();
    let (ok, _, err) = defed(&["classify", "--classifier", lenet, &p("zero.idx")]);
    assert!(!ok && err.contains("empty images"), "{err}");
    // F4: labels outside the classifier's classes.
    let img = defed::io::NpyArray::f32(vec![2, 1, 28, 28], vec![0.0; 2 * 784]);
    defed::io::write_npy(p("x.npy"), &img).unwrap();
    for bad in [255i64, 1_000_000_000_000_000_000] {
        defed::io::write_npy(p("y.npy"), &defed::io::NpyArray::i64(vec![2], vec![1, bad])).unwrap();
        let (ok, _, err) = defed(&[
            "classify",
            "--classifier",
            lenet,
            &p("x.npy"),
            "--labels",
            &p("y.npy"),
        ]);
        assert!(!ok && err.contains(&format!("label {bad}")), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Labels in an .npz are read as labels, not as an IDX file.
    defed::io::write_npz(
        p("set.npz"),
        [
            ("x", &img),
            ("y", &defed::io::NpyArray::i64(vec![2], vec![3, 4])),
        ],
    )
    .unwrap();
    let (ok, out, err) = defed(&[
        "classify",
        "--classifier",
        lenet,
        &p("x.npy"),
        "--labels",
        &p("set.npz"),
        "--summary",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("/2)"), "{out}");
    // An unknown kind of file says which kinds are read.
    std::fs::write(p("notes.txt"), "hello").unwrap();
    let (ok, _, err) = defed(&["classify", "--classifier", lenet, &p("notes.txt")]);
    assert!(!ok && err.contains(".npz") && err.contains(".txt"), "{err}");
    // An OS error is said once.
    let (ok, _, err) = defed(&["classify", "--classifier", lenet, "/no/such/x.npy"]);
    assert!(!ok);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

/// The job-array recipe on one machine: three shard processes at once, `defed merge`, and the
/// same tables and examples as one unsharded run.
#[test]
fn sharded_attack_grid_merges_into_the_unsharded_result() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let lenet = "models/lenet-mnist.safetensors";
    let (ok, _, err) = defed(&[
        "benign",
        "--classifier",
        lenet,
        "--dataset",
        "mnist-embedded:val",
        "--num",
        "24",
        "--out",
        &p("benign.npz"),
    ]);
    assert!(ok, "{err}");
    let args = |out: &str, shard: &str| -> Vec<String> {
        [
            "attack",
            "--classifier",
            lenet,
            "--benign",
            &p("benign.npz"),
            "--attack",
            "fgsm",
            "--eps",
            "0.1",
            "0.2",
            "0.3",
            "--out",
            &p(out),
            "--shard",
            shard,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // Two shards of three budgets: the first draws a sweep of its two budgets (the second has
    // one, no sweep); the merge draws the whole sweep again from the merged rows.
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_defed"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(args(&format!("shard-{i}"), &format!("{i}/2")))
                .output()
        })
        .collect();
    for c in children {
        let c = c.unwrap();
        assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    }
    let whole: Vec<String> = args("whole", "0/1");
    let whole: Vec<&str> = whole.iter().map(String::as_str).collect();
    let (ok, _, err) = defed(&whole);
    assert!(ok, "{err}");
    let (ok, out, err) = defed(&["merge", &p("shard-0"), &p("shard-1"), "--out", &p("merged")]);
    assert!(ok, "{err}");
    assert!(out.contains("summary.csv (3 rows)"), "{out}");
    assert!(
        !out.contains("image chunks"),
        "job shards are not pooled: {out}"
    );
    let figures = |d: &str| std::fs::read_to_string(dir.path().join(d).join("figures.json"));
    assert!(figures("shard-0").unwrap() != figures("whole").unwrap());
    assert_eq!(figures("merged").unwrap(), figures("whole").unwrap());
    // The same rows, timings aside.
    let rows = |d: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(dir.path().join(d).join("summary.csv"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut c: Vec<&str> = l.split(',').collect();
                c.remove(6); // seconds_per_image
                c.join(",")
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(rows("merged"), rows("whole"));
    // The same adversarial examples.
    for f in std::fs::read_dir(dir.path().join("whole")).unwrap() {
        let f = f.unwrap().file_name().to_string_lossy().to_string();
        if f.ends_with(".npz") {
            let a = defed::io::read_npz(dir.path().join("whole").join(&f)).unwrap();
            let b = defed::io::read_npz(dir.path().join("merged").join(&f)).unwrap();
            assert_eq!(a.get("adv"), b.get("adv"), "{f}");
        }
    }
    let md = std::fs::read_to_string(dir.path().join("merged/merged.md")).unwrap();
    assert!(md.contains("| FGSM"), "{md}");
    // More shards than jobs: a clear error.
    let many: Vec<String> = args("x", "3/4");
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (ok, _, err) = defed(&many);
    assert!(!ok && err.contains("no attack"), "{err}");
}
