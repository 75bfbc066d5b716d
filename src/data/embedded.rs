//! The 10,000 MNIST training digits compiled into defed (see `data/mnist/README.md`).

use std::path::Path;

use super::ImageSet;
use super::idx::{idx_to_set, read_idx_bytes};

static IMAGES: &[u8] = include_bytes!("../../data/mnist/train-10k-images-idx3-ubyte.gz");
static LABELS: &[u8] = include_bytes!("../../data/mnist/train-10k-labels-idx1-ubyte.gz");

/// The embedded 10,000 real MNIST training digits (about 1,000 per class), 1 x 28 x 28.
pub fn embedded_mnist() -> ImageSet {
    let img = read_idx_bytes(IMAGES).expect("embedded MNIST images are valid");
    let lab = read_idx_bytes(LABELS).expect("embedded MNIST labels are valid");
    idx_to_set(&img, &lab, Path::new("<embedded>"), Path::new("<embedded>"))
        .expect("embedded MNIST is consistent")
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_digits() {
        let set = super::embedded_mnist();
        assert_eq!(set.len(), 10_000);
        assert_eq!(set.shape, [1, 28, 28]);
        let mut counts = [0usize; 10];
        set.labels.iter().for_each(|&l| counts[l] += 1);
        assert!(
            counts.iter().all(|&c| (800..=1200).contains(&c)),
            "{counts:?}"
        );
    }
}
