//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the project, or `None` (after printing why) when it is absent.
pub fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if p.join("reference").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} is absent; the parity tests need the shared reference material",
            p.display()
        );
        None
    }
}

/// The real MNIST test split in `shared/data/mnist` (all 10,000 images, in file order).
pub fn mnist_test(shared: &std::path::Path) -> defed::data::ImageSet {
    let d = shared.join("data/mnist");
    defed::data::read_idx_pair(
        d.join("t10k-images-idx3-ubyte.gz"),
        d.join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap()
}

/// Reads a fixture `.npy` as float32.
pub fn fixture(shared: &std::path::Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let a = defed::io::read_npy(shared.join("reference/fixtures").join(name)).unwrap();
    let v = a.to_f32();
    (a.shape, v)
}

/// Largest absolute difference.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Asserts closeness within `tol` and prints the error.
pub fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    let e = max_abs(got, want);
    eprintln!("{name}: max abs error {e:.3e}");
    assert!(e <= tol, "{name}: max abs error {e} > {tol}");
}

/// The first `n` embedded digits in colour on 32 x 32 (random foreground and background
/// colours, 2-pixel border), with their digit labels: SVHN-shaped data for tests.
pub fn colour_digits(n: usize, seed: u64) -> defed::data::ImageSet {
    use rand::{RngExt, SeedableRng};
    let digits = defed::data::embedded_mnist().take(n);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n * 3 * 1024);
    for i in 0..digits.len() {
        let fg: [f32; 3] = [rng.random(), rng.random(), rng.random()];
        let bg: [f32; 3] = [rng.random(), rng.random(), rng.random()];
        for c in 0..3 {
            for h in 0..32 {
                for w in 0..32 {
                    let v = if (2..30).contains(&h) && (2..30).contains(&w) {
                        digits.image(i)[(h - 2) * 28 + (w - 2)]
                    } else {
                        0.0
                    };
                    images.push(v * fg[c] + (1.0 - v) * bg[c]);
                }
            }
        }
    }
    defed::data::ImageSet::new(images, digits.labels.clone(), [3, 32, 32]).unwrap()
}
