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
    ] {
        let (ok, _, err) = defed(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
