//! Reading images from user-given paths, and data sets from `NAME[:SPLIT]` specs.

use std::path::{Path, PathBuf};

use super::download::{Split, default_cache_dir, load_named};
use super::folder::{FolderOptions, read_image_file, read_image_folder};
use super::idx::read_idx;
use super::{ImageSet, read_npy_images, read_npy_labels};
use crate::error::{Error, Result};

/// Images read from files, with optional labels and a name per image.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Pixels in `[0, 1]`, `N x C x H x W`.
    pub pixels: Vec<f32>,
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// A name per image (file name, or `file[i]` for arrays).
    pub names: Vec<String>,
    /// Labels, when the input carries them (class folders).
    pub labels: Option<Vec<usize>>,
}

impl Inputs {
    /// As an [`ImageSet`] with the given labels (or zeros when there are none).
    pub fn into_set(self, labels: Option<Vec<usize>>) -> Result<ImageSet> {
        let [n, c, h, w] = self.shape;
        let labels = labels.or(self.labels).unwrap_or_else(|| vec![0; n]);
        if labels.len() != n {
            return Err(Error::Shape(format!(
                "{} labels for {n} images",
                labels.len()
            )));
        }
        ImageSet::new(self.pixels, labels, [c, h, w])
    }
}

fn ext(p: &Path) -> String {
    p.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Reads images from files and folders: `.npy` arrays, IDX image files (raw or `.gz`),
/// PNG/JPEG files, folders of images, or class folders (one sub-folder per class, giving
/// labels). PNG/JPEG are read with `channels` and `size` (`[H, W]`). All inputs must share one
/// image shape.
pub fn read_inputs(paths: &[PathBuf], channels: usize, size: [usize; 2]) -> Result<Inputs> {
    if paths.is_empty() {
        return Err(Error::Invalid("no input images given".into()));
    }
    let opts = FolderOptions {
        channels,
        size,
        resize: false,
    };
    let mut pixels = Vec::new();
    let mut names = Vec::new();
    let mut shape: Option<[usize; 3]> = None;
    let mut labels: Option<Vec<usize>> = Some(Vec::new());
    let mut push = |p: &Path, data: Vec<f32>, s: [usize; 4], name: Vec<String>| -> Result<()> {
        let img = [s[1], s[2], s[3]];
        if img.contains(&0) {
            return Err(Error::format(
                p,
                format!("empty images of shape {}x{}x{}", img[0], img[1], img[2]),
            ));
        }
        match shape {
            None => shape = Some(img),
            Some(prev) if prev != img => {
                return Err(Error::format(
                    p,
                    format!(
                        "images are {}x{}x{} but earlier inputs are {}x{}x{}",
                        img[0], img[1], img[2], prev[0], prev[1], prev[2]
                    ),
                ));
            }
            _ => {}
        }
        pixels.extend(data);
        names.extend(name);
        Ok(())
    };
    for p in paths {
        if p.is_dir() {
            let has_subdirs = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok())
                .any(|e| e.path().is_dir());
            if has_subdirs {
                let (set, classes) = read_image_folder(p, &opts)?;
                let n = set.len();
                let nm = (0..n)
                    .map(|i| format!("{}/{}#{i}", p.display(), classes[set.labels[i]]))
                    .collect();
                if let Some(l) = labels.as_mut() {
                    l.extend(&set.labels);
                }
                push(p, set.images, [n, channels, size[0], size[1]], nm)?;
                continue;
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| matches!(ext(f).as_str(), "png" | "jpg" | "jpeg"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(Error::format(p, "the folder holds no PNG or JPEG images"));
            }
            labels = None;
            for f in files {
                let v = read_image_file(&f, &opts)?;
                push(
                    &f,
                    v,
                    [1, channels, size[0], size[1]],
                    vec![f.display().to_string()],
                )?;
            }
            continue;
        }
        labels = None;
        match ext(p).as_str() {
            "png" | "jpg" | "jpeg" => {
                let v = read_image_file(p, &opts)?;
                push(
                    p,
                    v,
                    [1, channels, size[0], size[1]],
                    vec![p.display().to_string()],
                )?;
            }
            "npy" | "npz" => {
                let (v, s) = if ext(p) == "npy" {
                    read_npy_images(p)?
                } else {
                    super::read_npz_images(p)?
                };
                let nm = (0..s[0]).map(|i| format!("{}[{i}]", p.display())).collect();
                push(p, v, s, nm)?;
            }
            other => {
                let arr = read_idx(p).map_err(|e| match e {
                    Error::Format { ref msg, .. } if msg.contains("magic") => Error::format(
                        p,
                        format!(
                            "{msg}; inputs are .npy, .npz, .png, .jpg or IDX files (raw or .gz){}",
                            if other.is_empty() {
                                String::new()
                            } else {
                                format!(", and .{other} is none of these")
                            }
                        ),
                    ),
                    e => e,
                })?;
                if arr.dims.len() != 3 {
                    return Err(Error::format(
                        p,
                        format!(
                            "an IDX images file needs dimensions N x H x W, this one has {:?}",
                            arr.dims
                        ),
                    ));
                }
                let s = [arr.dims[0], 1, arr.dims[1], arr.dims[2]];
                let nm = (0..s[0]).map(|i| format!("{}[{i}]", p.display())).collect();
                let v = arr.data.iter().map(|&b| b as f32 / 255.0).collect();
                push(p, v, s, nm)?;
            }
        }
    }
    let s = shape.expect("at least one input");
    let n = names.len();
    Ok(Inputs {
        pixels,
        shape: [n, s[0], s[1], s[2]],
        names,
        labels,
    })
}

/// Reads labels from an IDX labels file, a `.npy` integer array, or the `y` / `labels` array
/// of an `.npz`.
pub fn read_labels(path: &Path) -> Result<Vec<usize>> {
    match ext(path).as_str() {
        "npy" => return read_npy_labels(path),
        "npz" => {
            let arrays = crate::io::read_npz(path)?;
            let y = arrays
                .get("y")
                .or_else(|| arrays.get("labels"))
                .ok_or_else(|| Error::format(path, "no array named y or labels"))?;
            return super::labels_from_array(path, y);
        }
        _ => {}
    }
    let arr = read_idx(path)?;
    if arr.dims.len() != 1 {
        return Err(Error::format(
            path,
            format!(
                "a labels file needs one dimension, this one has {:?}",
                arr.dims
            ),
        ));
    }
    Ok(arr.data.iter().map(|&b| b as usize).collect())
}

/// Loads a data set from a spec `NAME[:SPLIT]`: NAME is `mnist-embedded`, `mnist`,
/// `fashion-mnist`, `cifar10`, `svhn`, or a class folder; SPLIT is `train`, `test`, `val` (a
/// seeded `val_fraction` of train), `train-val` (train without that part) or, for SVHN,
/// `extra`. `mnist-embedded` defaults to `train`, the others to `test`.
pub fn load_spec(spec: &str, val_fraction: f64, seed: u64) -> Result<ImageSet> {
    let (name, split) = match spec.rsplit_once(':') {
        Some((n, s)) if ["train", "test", "val", "train-val", "extra"].contains(&s) => (n, Some(s)),
        _ => (spec, None),
    };
    let path = Path::new(name);
    if path.is_dir() {
        return Err(Error::Invalid(format!(
            "{name} is a folder: pass it as an input path, not as --dataset"
        )));
    }
    let cache = default_cache_dir();
    let default_split = if name == "mnist-embedded" {
        "train"
    } else {
        "test"
    };
    match split.unwrap_or(default_split) {
        "test" => load_named(name, Split::Test, &cache),
        "train" => load_named(name, Split::Train, &cache),
        "extra" => load_named(name, Split::Extra, &cache),
        "val" => Ok(load_named(name, Split::Train, &cache)?
            .split(val_fraction, seed)
            .1),
        _ => Ok(load_named(name, Split::Train, &cache)?
            .split(val_fraction, seed)
            .0),
    }
}

/// Loads the training data named by `spec` and splits off a seeded validation part:
/// a named data set's training split (`mnist-embedded`, `mnist`, `fashion-mnist`, `cifar10`),
/// a class folder (read with `channels` and `size`), or an `.npz` with arrays `x`/`images` and
/// `y`/`labels`. `limit` keeps only the first images of the training part (for quick runs).
pub fn load_train_val(
    spec: &str,
    channels: usize,
    size: [usize; 2],
    val_fraction: f64,
    seed: u64,
    limit: Option<usize>,
) -> Result<(ImageSet, ImageSet)> {
    let path = Path::new(spec);
    let full = if path.is_dir() {
        let opts = FolderOptions {
            channels,
            size,
            resize: false,
        };
        read_image_folder(path, &opts)?.0
    } else if spec.ends_with(".npz") {
        read_npz_set(path)?
    } else {
        let name = spec.trim_end_matches(":train");
        load_named(name, Split::Train, &default_cache_dir())?
    };
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::Invalid(format!(
            "the validation fraction must be in [0, 1), got {val_fraction}"
        )));
    }
    let (train, val) = full.split(val_fraction, seed);
    let train = match limit {
        Some(n) => train.take(n),
        None => train,
    };
    let val = match limit {
        Some(n) => val.take((n / 5).max(1)),
        None => val,
    };
    Ok((train, val))
}

/// Reads an image set from an `.npz` with `x` (or `images`) and `y` (or `labels`).
pub fn read_npz_set(path: &Path) -> Result<ImageSet> {
    let arrays = crate::io::read_npz(path)?;
    let x = arrays
        .get("x")
        .or_else(|| arrays.get("images"))
        .ok_or_else(|| Error::format(path, "no array named x or images"))?;
    let y = arrays
        .get("y")
        .or_else(|| arrays.get("labels"))
        .ok_or_else(|| Error::format(path, "no array named y or labels"))?;
    let shape = match x.shape.as_slice() {
        [_, c, h, w] => [*c, *h, *w],
        [_, h, w] => [1, *h, *w],
        other => {
            return Err(Error::format(
                path,
                format!("images of shape {other:?}, expected N x C x H x W"),
            ));
        }
    };
    let pixels = match &x.data {
        crate::io::NpyData::U8(v) => v.iter().map(|&b| b as f32 / 255.0).collect(),
        _ => x.to_f32(),
    };
    let labels = super::labels_from_array(path, y)?;
    ImageSet::new(pixels, labels, shape).map_err(|e| Error::format(path, e.to_string()))
}
