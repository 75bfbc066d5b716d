//! SVHN's MAT-files, read from small fixtures written by SciPy (`scripts/make-svhn-fixtures.py`)
//! in both encodings: exact pixels (the column-major layout), labels (10 means 0), and clear
//! errors for wrong variables, truncation and other formats.

use std::path::PathBuf;

use defed::data::read_svhn;

mod common;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/svhn")
        .join(name)
}

#[test]
fn both_encodings_give_the_exact_pixels_and_labels() {
    for name in ["svhn-plain.mat", "svhn-compressed.mat"] {
        let set = read_svhn(fixture(name)).unwrap();
        assert_eq!(set.shape, [3, 32, 32], "{name}");
        assert_eq!(set.labels, vec![0, 1, 9], "{name}");
        for k in 0..3 {
            let img = set.image(k);
            for c in 0..3 {
                for h in 0..32 {
                    for w in 0..32 {
                        let want = ((7 * h + 3 * w + 50 * c + 11 * k) % 256) as f32 / 255.0;
                        assert_eq!(
                            img[c * 1024 + h * 32 + w],
                            want,
                            "{name} n{k} c{c} h{h} w{w}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn wrong_and_damaged_files_get_clear_errors() {
    let err = |p: PathBuf| read_svhn(&p).unwrap_err().to_string();
    let e = err(fixture("svhn-no-x.mat"));
    assert!(e.contains("no variable X") && e.contains("images"), "{e}");
    let e = err(fixture("svhn-v4.mat"));
    assert!(e.contains("level-5"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    for name in ["svhn-plain.mat", "svhn-compressed.mat"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for cut in [100, 200, bytes.len() / 2, bytes.len() - 3] {
            let p = dir.path().join(format!("cut-{cut}-{name}"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let e = err(p);
            assert!(e.contains(&format!("cut-{cut}")), "{e}");
            assert!(
                e.contains("truncated")
                    || e.contains("no variable")
                    || e.contains("short")
                    || e.contains("corrupt"),
                "{name} cut at {cut}: {e}"
            );
        }
    }
    // Dimensions that do not match the labels.
    let p = dir.path().join("labels.mat");
    let mut bytes = std::fs::read(fixture("svhn-plain.mat")).unwrap();
    // y's dimensions are the last int32 pair before its name: find "y" and patch N (3 -> 4).
    let pos = bytes
        .windows(8)
        .rposition(|w| w == [3, 0, 0, 0, 1, 0, 0, 0])
        .unwrap();
    bytes[pos] = 4;
    std::fs::write(&p, &bytes).unwrap();
    let e = err(p);
    assert!(e.contains("need 4 values") || e.contains("4 labels"), "{e}");
}

fn opts(dir: &std::path::Path, name: &str, epochs: usize) -> defed::train::RunOptions {
    defed::train::RunOptions {
        out_dir: dir.to_path_buf(),
        name: name.into(),
        epochs,
        batch_size: 32,
        lr: 1e-3,
        milestones: vec![],
        seed: 1,
        resume: false,
        progress: false,
        source: "test".into(),
        dataset: "colour digits".into(),
    }
}

/// Stages 3-4 with 3 channels: the SVHN VGG classifier and a 3-channel Defed train, save and
/// load like the MNIST ones.
#[test]
fn colour_classifier_and_denoiser_train() {
    let dir = tempfile::tempdir().unwrap();
    let set = common::colour_digits(1200, 5);
    let (train, val) = set.split(0.2, 0);
    let device = defed::autodiff_device();
    device.seed(1);
    let p = defed::train::train_classifier(
        defed::model::SvhnNet::new(3, &device),
        &train,
        &val,
        &Default::default(),
        &opts(dir.path(), "vgg", 3),
        &device,
    )
    .unwrap();
    let acc = p.best["val_accuracy"];
    eprintln!("colour digits, 3 epochs: validation accuracy {acc:.3}");
    assert!(acc > 0.3, "{acc}");
    let (clf, meta) =
        defed::model::load_classifier(dir.path().join("vgg.safetensors"), &defed::default_device())
            .unwrap();
    assert_eq!(clf.input_shape(), [3, 32, 32]);
    assert_eq!(meta.architecture.name(), "svhn-vgg");

    let cfg = defed::train::DenoiserTrainConfig {
        noise: 60.0,
        alpha: 0.0,
        edge: Some(defed::model::EdgeMethod::Laplacian),
        alpha_warmup: 0,
        adversarial: None,
        detection: None,
        average: None,
        augment: Default::default(),
    };
    let clf_ad = clf.to_device(&device).frozen();
    let p = defed::train::train_denoiser(
        defed::model::Defed::new(3, defed::model::EdgeMethod::Laplacian, &device),
        &clf_ad,
        &train.take(800),
        &val.take(64),
        &cfg,
        &opts(dir.path(), "d3", 3),
        &device,
    )
    .unwrap();
    let (first, last) = (&p.history[0], p.history.last().unwrap());
    eprintln!(
        "3-channel Defed: noisy PSNR {:.2}, denoised {:.2}",
        first["noisy_val_psnr"], last["val_psnr"]
    );
    assert!(last["val_psnr"] > first["noisy_val_psnr"] + 1.0);
    let (d, _) = defed::model::load_denoiser(
        dir.path().join("d3.safetensors"),
        &defed::default_device(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(d.channels(), 3);
}

/// Without the data, the pipeline names the download command.
#[test]
fn missing_svhn_names_the_download_command() {
    let cache = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_defed"))
        .env("DEFED_CACHE_DIR", cache.path())
        .args(["pipeline", "--dataset", "svhn", "--out"])
        .arg(cache.path().join("r"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("defed data download svhn"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
