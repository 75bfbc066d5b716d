//! Bad input gets a clear error naming the file and the problem, never a panic.

use std::path::Path;

use defed::data::{ImageSet, read_idx_pair, read_inputs, read_npy_images};
use defed::io::{NpyArray, write_npy};
use defed::model::checkpoint::{CheckpointMeta, save_model};
use defed::model::{
    Architecture, BaseNet, Defed, EdgeMethod, LeNet, LoadOptions, load_classifier, load_denoiser,
};
use defed::util::tensor4;
use defed::{Error, default_device};

fn err_text<T: std::fmt::Debug>(r: defed::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn missing_paths_are_named() {
    let dev = default_device();
    let e = err_text(load_classifier("/nonexistent/model.safetensors", &dev));
    assert!(e.contains("/nonexistent/model.safetensors"), "{e}");
    let e = err_text(read_idx_pair("/nonexistent/a.gz", "/nonexistent/b.gz"));
    assert!(e.contains("/nonexistent/a.gz"), "{e}");
    let e = err_text(read_npy_images("/nonexistent/x.npy"));
    assert!(e.contains("x.npy"), "{e}");
}

#[test]
fn corrupt_and_truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let dev = default_device();
    // IDX: truncated data.
    let img = dir.path().join("img.idx");
    let lab = dir.path().join("lab.idx");
    let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
    bytes.extend(vec![0u8; 28 * 28 + 5]);
    std::fs::write(&img, &bytes).unwrap();
    std::fs::write(&lab, [0, 0, 8, 1, 0, 0, 0, 2, 1, 2]).unwrap();
    let e = err_text(read_idx_pair(&img, &lab));
    assert!(e.contains("img.idx") && e.contains("truncated"), "{e}");
    // npy: truncated.
    let npy = dir.path().join("x.npy");
    write_npy(&npy, &NpyArray::f32(vec![2, 1, 4, 4], vec![0.5; 32])).unwrap();
    let full = std::fs::read(&npy).unwrap();
    std::fs::write(&npy, &full[..full.len() - 7]).unwrap();
    let e = err_text(read_npy_images(&npy));
    assert!(e.contains("x.npy") && e.contains("truncated"), "{e}");
    // safetensors: garbage and truncated.
    let st = dir.path().join("m.safetensors");
    std::fs::write(&st, b"this is not a checkpoint at all").unwrap();
    let e = err_text(load_classifier(&st, &dev));
    assert!(e.contains("m.safetensors"), "{e}");
    let meta = CheckpointMeta::new(Architecture::Lenet, 1);
    save_model(&LeNet::new(&dev), &meta, &st).unwrap();
    let full = std::fs::read(&st).unwrap();
    std::fs::write(&st, &full[..full.len() / 2]).unwrap();
    let e = err_text(load_classifier(&st, &dev));
    assert!(e.contains("m.safetensors"), "{e}");
    // pth: a zip that is not a torch file, and a truncated zip.
    let pth = dir.path().join("m.pth");
    std::fs::write(&pth, b"PK\x03\x04garbage garbage").unwrap();
    let e = err_text(load_classifier(&pth, &dev));
    assert!(e.contains("m.pth"), "{e}");
}

#[test]
fn truncated_original_pth() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/checkpoints/pytorch/mnist-classifier.pth");
    if !p.exists() {
        eprintln!("SKIPPED: {} is absent", p.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("cut.pth");
    let full = std::fs::read(&p).unwrap();
    std::fs::write(&t, &full[..full.len() * 2 / 3]).unwrap();
    let e = err_text(load_classifier(&t, &default_device()));
    assert!(e.contains("cut.pth"), "{e}");
}

#[test]
fn nan_and_out_of_range_pixels() {
    let e = err_text(ImageSet::new(
        vec![0.1, f32::NAN, 0.3, 0.4],
        vec![0],
        [1, 2, 2],
    ));
    assert!(e.contains("NaN"), "{e}");
    let e = err_text(ImageSet::new(
        vec![0.1, 255.0, 0.3, 0.4],
        vec![0],
        [1, 2, 2],
    ));
    assert!(e.contains("outside [0, 1]"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("nan.npy");
    let mut v = vec![0.5f32; 16];
    v[3] = f32::NAN;
    write_npy(&npy, &NpyArray::f32(vec![1, 1, 4, 4], v)).unwrap();
    let e = err_text(read_npy_images(&npy));
    assert!(e.contains("nan.npy") && e.contains("NaN"), "{e}");
    let e = err_text(ImageSet::new(vec![0.5; 5], vec![0], [1, 2, 2]));
    assert!(e.contains("do not make"), "{e}");
}

#[test]
fn wrong_shapes() {
    let dev = default_device();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lenet.safetensors");
    save_model(
        &LeNet::new(&dev),
        &CheckpointMeta::new(Architecture::Lenet, 1),
        &p,
    )
    .unwrap();
    let (clf, _) = load_classifier(&p, &dev).unwrap();
    let e = err_text(clf.try_logits(tensor4(vec![0.5; 3 * 32 * 32], [1, 3, 32, 32], &dev)));
    assert!(e.contains("1x28x28") && e.contains("3x32x32"), "{e}");
    let d = defed::model::Denoiser::Defed(Box::new(Defed::new(1, EdgeMethod::Laplacian, &dev)));
    let e = err_text(d.try_denoise(tensor4(vec![0.5; 30 * 30], [1, 1, 30, 30], &dev)));
    assert!(e.contains("divisible by 4") && e.contains("30x30"), "{e}");
    let e = err_text(d.try_denoise(tensor4(vec![0.5; 3 * 28 * 28], [1, 3, 28, 28], &dev)));
    assert!(e.contains("1-channel"), "{e}");
    // Images of the wrong size for the inputs reader.
    let png = dir.path().join("big.png");
    image::GrayImage::new(32, 32).save(&png).unwrap();
    let e = err_text(read_inputs(&[png], 1, [28, 28]));
    assert!(e.contains("big.png") && e.contains("28x28"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = err_text(read_inputs(&[empty], 1, [28, 28]));
    assert!(e.contains("no PNG"), "{e}");
}

#[test]
fn checkpoint_of_another_architecture() {
    let dev = default_device();
    let dir = tempfile::tempdir().unwrap();
    // A denoiser loaded as a classifier, and the other way round.
    let p = dir.path().join("basenet.safetensors");
    save_model(
        &BaseNet::new(1, &dev),
        &CheckpointMeta::new(Architecture::Basenet, 1),
        &p,
    )
    .unwrap();
    let e = err_text(load_classifier(&p, &dev));
    assert!(e.contains("basenet denoiser, not a classifier"), "{e}");
    let l = dir.path().join("lenet.safetensors");
    save_model(
        &LeNet::new(&dev),
        &CheckpointMeta::new(Architecture::Lenet, 1),
        &l,
    )
    .unwrap();
    let e = err_text(load_denoiser(&l, &dev, &LoadOptions::default()));
    assert!(e.contains("lenet classifier, not a denoiser"), "{e}");
    // Metadata that lies: BaseNet weights labelled as Defed. The first mismatching tensor is
    // named with its shape.
    let mut meta = CheckpointMeta::new(Architecture::Defed, 1);
    meta.edge = Some(EdgeMethod::Laplacian);
    let q = dir.path().join("liar.safetensors");
    save_model(&BaseNet::new(1, &dev), &meta, &q).unwrap();
    let e = err_text(load_denoiser(&q, &dev, &LoadOptions::default()));
    assert!(
        e.contains("liar.safetensors") && e.contains("tensor skip1.layers.0.weight"),
        "{e}"
    );
    assert!(e.contains("missing"), "{e}");
    // Right names, wrong shapes: a 3-channel Defed labelled as 1-channel.
    let mut meta = CheckpointMeta::new(Architecture::Defed, 1);
    meta.edge = Some(EdgeMethod::Sobel);
    let r = dir.path().join("shape.safetensors");
    save_model(&Defed::new(3, EdgeMethod::Sobel, &dev), &meta, &r).unwrap();
    let e = err_text(load_denoiser(&r, &dev, &LoadOptions::default()));
    assert!(
        e.contains("[16, 3, 3, 3]") && e.contains("[16, 1, 3, 3]"),
        "{e}"
    );
    assert!(matches!(
        load_denoiser(&r, &dev, &LoadOptions::default()),
        Err(Error::Checkpoint { .. })
    ));
}

#[test]
fn checkpoint_roundtrip_and_atomic_write() {
    let dev = default_device();
    let dir = tempfile::tempdir().unwrap();
    let net = Defed::new(1, EdgeMethod::Sobel, &dev);
    let mut meta = CheckpointMeta::new(Architecture::Defed, 1);
    meta.edge = Some(EdgeMethod::Sobel);
    meta.noise = Some(60.0);
    meta.alpha = Some(1.0);
    meta.metrics.insert("val_psnr".into(), 25.5);
    let p = dir.path().join("d.safetensors");
    save_model(&net, &meta, &p).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        vec!["d.safetensors"],
        "no temporary file left behind"
    );
    let (loaded, m) = load_denoiser(&p, &dev, &LoadOptions::default()).unwrap();
    assert_eq!(m, meta);
    let x = tensor4(
        (0..2 * 28 * 28).map(|i| (i % 97) as f32 / 97.0).collect(),
        [2, 1, 28, 28],
        &dev,
    );
    let reference = defed::model::Denoiser::Defed(Box::new(net)).frozen();
    let a = defed::util::to_vec(reference.forward(x.clone()));
    let b = defed::util::to_vec(loaded.forward(x));
    assert_eq!(a, b);
}
