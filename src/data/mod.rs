//! Data: image sets in memory, readers for IDX / CIFAR-10 / image folders / NumPy, the
//! embedded MNIST digits, seeded shuffling and batching, Gaussian noise, and downloads.

mod augment;
mod batch;
mod cifar;
pub mod download;
mod embedded;
mod folder;
mod idx;
mod inputs;
mod noise;
mod svhn;

use std::path::Path;

use burn::tensor::Tensor;

pub use augment::Augment;
pub use batch::{Batches, shuffled_indices};
pub use cifar::read_cifar10;
pub use embedded::embedded_mnist;
pub(crate) use folder::to_planar;
pub use folder::{FolderOptions, read_image_file, read_image_folder};
pub use idx::{IdxArray, read_idx, read_idx_bytes, read_idx_pair};
pub use inputs::{Inputs, load_spec, load_train_val, read_inputs, read_labels, read_npz_set};
pub use noise::{add_gaussian_noise, add_gaussian_noise_tensor};
pub use svhn::read_svhn;

use crate::backend::Device;
use crate::error::{Error, Result};
use crate::io::{NpyArray, read_npy};
use crate::util::row;

/// A set of images with labels, held as float32 in `[0, 1]`, layout `N x C x H x W`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Pixels, `len() * C * H * W` values in `[0, 1]`.
    pub images: Vec<f32>,
    /// One class label per image.
    pub labels: Vec<usize>,
    /// `[C, H, W]` of every image.
    pub shape: [usize; 3],
    /// Where each image came from (its index in the source split), when known.
    pub indices: Vec<usize>,
}

impl ImageSet {
    /// Builds a set, checking that sizes agree and that every pixel is finite and in `[0, 1]`.
    pub fn new(images: Vec<f32>, labels: Vec<usize>, shape: [usize; 3]) -> Result<Self> {
        let per = shape.iter().product::<usize>();
        if per == 0 {
            return Err(Error::Shape(format!("empty image shape {shape:?}")));
        }
        if images.len() != labels.len() * per {
            return Err(Error::Shape(format!(
                "{} pixel values do not make {} images of {}x{}x{}",
                images.len(),
                labels.len(),
                shape[0],
                shape[1],
                shape[2]
            )));
        }
        validate_pixels(&images)?;
        let indices = (0..labels.len()).collect();
        Ok(ImageSet {
            images,
            labels,
            shape,
            indices,
        })
    }

    /// Checks every label against the class count of the model it is used with: a label out of
    /// range would otherwise index past a one-hot row or count as a silent error.
    pub fn check_labels(&self, classes: usize) -> Result<()> {
        match self.labels.iter().position(|&l| l >= classes) {
            Some(i) => Err(Error::Invalid(format!(
                "label {} of image {} is not a class of a {classes}-class model (0..={})",
                self.labels[i],
                self.source_index(i),
                classes.saturating_sub(1)
            ))),
            None => Ok(()),
        }
    }

    /// Image `i`'s index in the split it came from (its position here when the set does not
    /// know it).
    pub fn source_index(&self, i: usize) -> usize {
        self.indices.get(i).copied().unwrap_or(i)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        row(&self.images, i, n)
    }

    /// A new set of the images at `idx` (in that order), keeping their source indices.
    pub fn select(&self, idx: &[usize]) -> ImageSet {
        let n = self.image_len();
        let mut images = Vec::with_capacity(idx.len() * n);
        for &i in idx {
            images.extend_from_slice(self.image(i));
        }
        ImageSet {
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            indices: idx.iter().map(|&i| self.indices[i]).collect(),
        }
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn take(&self, n: usize) -> ImageSet {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.select(&idx)
    }

    /// Images `start..end` as a tensor on `device`.
    pub fn tensor(&self, start: usize, end: usize, device: &Device) -> Tensor<4> {
        let n = self.image_len();
        let [c, h, w] = self.shape;
        crate::util::tensor4(
            self.images[start * n..end * n].to_vec(),
            [end - start, c, h, w],
            device,
        )
    }

    /// Splits off a seeded random validation part of `fraction` of the images:
    /// returns `(train, validation)`.
    pub fn split(&self, fraction: f64, seed: u64) -> (ImageSet, ImageSet) {
        let order = shuffled_indices(self.len(), seed);
        let n_val = ((self.len() as f64) * fraction).round() as usize;
        let (val, train) = order.split_at(n_val.min(self.len()));
        let mut train = train.to_vec();
        let mut val = val.to_vec();
        train.sort_unstable();
        val.sort_unstable();
        (self.select(&train), self.select(&val))
    }
}

/// Checks that every pixel is finite and in `[0, 1]`.
pub fn validate_pixels(pixels: &[f32]) -> Result<()> {
    if let Some(i) = pixels.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "pixel {i} is {} (images must hold finite values in [0, 1])",
            pixels[i]
        )));
    }
    if let Some(i) = pixels.iter().position(|v| !(0.0..=1.0).contains(v)) {
        return Err(Error::Invalid(format!(
            "pixel {i} is {}, outside [0, 1] (defed expects pixels scaled to [0, 1], not 0-255 or mean/std normalised)",
            pixels[i]
        )));
    }
    Ok(())
}

/// Reads images from a `.npy` file of shape `N x C x H x W` (or `N x H x W` for one channel),
/// float in `[0, 1]` or uint8 in `0..=255`. Labels, if wanted, come from another file.
pub fn read_npy_images(path: impl AsRef<Path>) -> Result<(Vec<f32>, [usize; 4])> {
    let path = path.as_ref();
    images_from_array(path, read_npy(path)?)
}

/// Reads the images of an `.npz`: its array `adv` (an adversarial set), `x` or `images`.
pub fn read_npz_images(path: impl AsRef<Path>) -> Result<(Vec<f32>, [usize; 4])> {
    let path = path.as_ref();
    let mut arrays = crate::io::read_npz(path)?;
    let key = ["adv", "x", "images"]
        .into_iter()
        .find(|k| arrays.contains_key(*k))
        .ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "no image array (adv, x or images) among {:?}",
                    arrays.keys().collect::<Vec<_>>()
                ),
            )
        })?;
    let arr = arrays.remove(key).expect("key found above");
    images_from_array(path, arr)
}

/// Images from an array of shape N x C x H x W, N x H x W or H x W (uint8 or [0, 1] floats).
fn images_from_array(path: &Path, arr: NpyArray) -> Result<(Vec<f32>, [usize; 4])> {
    let shape: [usize; 4] = match arr.shape.as_slice() {
        [n, c, h, w] => [*n, *c, *h, *w],
        [n, h, w] => [*n, 1, *h, *w],
        [h, w] => [1, 1, *h, *w],
        other => {
            return Err(Error::format(
                path,
                format!("expected images of shape N x C x H x W, got {other:?}"),
            ));
        }
    };
    let values = match arr.data {
        crate::io::NpyData::U8(ref v) => v.iter().map(|&b| b as f32 / 255.0).collect(),
        _ => arr.to_f32(),
    };
    validate_pixels(&values).map_err(|e| Error::format(path, e.to_string()))?;
    Ok((values, shape))
}

/// Reads labels from a `.npy` file of integers.
pub fn read_npy_labels(path: impl AsRef<Path>) -> Result<Vec<usize>> {
    let path = path.as_ref();
    labels_from_array(path, &read_npy(path)?)
}

/// Class labels from an integer array of `path` (negative or fractional values are errors).
pub(crate) fn labels_from_array(path: &Path, arr: &NpyArray) -> Result<Vec<usize>> {
    arr.to_i64()
        .ok_or_else(|| Error::format(path, "labels must be integers"))?
        .into_iter()
        .map(|x| usize::try_from(x).map_err(|_| Error::format(path, format!("negative label {x}"))))
        .collect()
}
