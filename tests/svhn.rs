//! SVHN's MAT-files, read from small fixtures written by SciPy (`scripts/make-svhn-fixtures.py`)
//! in both encodings: exact pixels (the column-major layout), labels (10 means 0), and clear
//! errors for wrong variables, truncation and other formats.

use std::path::PathBuf;

use defed::data::read_svhn;

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
