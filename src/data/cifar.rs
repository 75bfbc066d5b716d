//! The CIFAR-10 binary format: records of one label byte and 3 x 32 x 32 pixel bytes.

use std::path::Path;

use super::ImageSet;
use crate::error::{Error, Result};
use crate::util::read_file;

const RECORD: usize = 1 + 3 * 32 * 32;

/// Reads one or more CIFAR-10 binary batch files (`data_batch_1.bin`, `test_batch.bin`, ...).
pub fn read_cifar10<P: AsRef<Path>>(files: &[P]) -> Result<ImageSet> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for p in files {
        let path = p.as_ref();
        let bytes = read_file(path)?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(Error::format(
                path,
                format!(
                    "{} bytes is not a whole number of CIFAR-10 records ({RECORD} bytes each): truncated or not a CIFAR-10 binary batch",
                    bytes.len()
                ),
            ));
        }
        for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
            if rec[0] > 9 {
                return Err(Error::format(
                    path,
                    format!("record {i} has label {} (CIFAR-10 labels are 0-9)", rec[0]),
                ));
            }
            labels.push(rec[0] as usize);
            images.extend(rec[1..].iter().map(|&b| b as f32 / 255.0));
        }
    }
    ImageSet::new(images, labels, [3, 32, 32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.bin");
        let mut bytes = vec![3u8];
        bytes.extend(std::iter::repeat_n(255u8, RECORD - 1));
        std::fs::write(&p, &bytes).unwrap();
        let set = read_cifar10(&[&p]).unwrap();
        assert_eq!(set.labels, vec![3]);
        assert_eq!(set.shape, [3, 32, 32]);
        assert!(set.images.iter().all(|&v| v == 1.0));
        std::fs::write(&p, &bytes[..100]).unwrap();
        assert!(
            read_cifar10(&[&p])
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        bytes[0] = 12;
        std::fs::write(&p, &bytes).unwrap();
        assert!(
            read_cifar10(&[&p])
                .unwrap_err()
                .to_string()
                .contains("label 12")
        );
    }
}
