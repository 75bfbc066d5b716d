//! Image folders: one sub-folder per class, PNG or JPEG files.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::ImageSet;
use crate::error::{Error, Result};

/// How to read an image folder.
#[derive(Debug, Clone, Copy)]
pub struct FolderOptions {
    /// Image channels wanted: 1 (grey) or 3 (RGB); colour images are converted.
    pub channels: usize,
    /// Height and width every image must have.
    pub size: [usize; 2],
    /// Resize images of another size instead of rejecting them.
    pub resize: bool,
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

/// Reads one PNG or JPEG file as `C x H x W` floats in `[0, 1]`.
pub fn read_image_file(path: &Path, opts: &FolderOptions) -> Result<Vec<f32>> {
    let img =
        image::open(path).map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    let [h, w] = opts.size;
    let img = if (img.height() as usize, img.width() as usize) != (h, w) {
        if !opts.resize {
            return Err(Error::format(
                path,
                format!(
                    "image is {}x{} (width x height) but {w}x{h} is required; pass --resize to resize",
                    img.width(),
                    img.height()
                ),
            ));
        }
        img.resize_exact(w as u32, h as u32, FilterType::Triangle)
    } else {
        img
    };
    to_planar(&img, opts.channels)
}

/// A decoded image as planar `C x H x W` floats in `[0, 1]`, converted to `channels` (1 = grey,
/// 3 = RGB).
pub(crate) fn to_planar(img: &image::DynamicImage, channels: usize) -> Result<Vec<f32>> {
    let (h, w) = (img.height() as usize, img.width() as usize);
    Ok(match channels {
        1 => img
            .to_luma8()
            .into_raw()
            .into_iter()
            .map(|b| b as f32 / 255.0)
            .collect(),
        3 => {
            // Interleaved RGB to planar C x H x W.
            let rgb = img.to_rgb8().into_raw();
            let mut out = vec![0f32; 3 * h * w];
            for (i, px) in rgb.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * h * w + i] = px[c] as f32 / 255.0;
                }
            }
            out
        }
        c => {
            return Err(Error::Invalid(format!(
                "images must have 1 or 3 channels, not {c}"
            )));
        }
    })
}

/// Reads a folder with one sub-folder per class (classes numbered in name order) and returns
/// the images and the class names.
pub fn read_image_folder(
    dir: impl AsRef<Path>,
    opts: &FolderOptions,
) -> Result<(ImageSet, Vec<String>)> {
    let dir = dir.as_ref();
    let classes: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(Error::format(
            dir,
            "no class sub-folders: an image folder holds one sub-folder of PNG/JPEG files per class",
        ));
    }
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut names = Vec::new();
    for (label, class_dir) in classes.iter().enumerate() {
        names.push(
            class_dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        );
        for file in sorted_entries(class_dir)?
            .into_iter()
            .filter(|p| is_image(p))
        {
            images.extend(read_image_file(&file, opts)?);
            labels.push(label);
        }
    }
    if labels.is_empty() {
        return Err(Error::format(
            dir,
            "the class sub-folders hold no PNG or JPEG files",
        ));
    }
    let [h, w] = opts.size;
    Ok((ImageSet::new(images, labels, [opts.channels, h, w])?, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_reading() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FolderOptions {
            channels: 1,
            size: [4, 4],
            resize: false,
        };
        assert!(
            read_image_folder(dir.path(), &opts)
                .unwrap_err()
                .to_string()
                .contains("no class")
        );
        for (class, v) in [("a", 0u8), ("b", 255u8)] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            image::GrayImage::from_pixel(4, 4, image::Luma([v]))
                .save(dir.path().join(class).join("x.png"))
                .unwrap();
        }
        let (set, names) = read_image_folder(dir.path(), &opts).unwrap();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(set.labels, vec![0, 1]);
        assert_eq!(set.image(1), &[1.0; 16][..]);
        image::GrayImage::from_pixel(5, 4, image::Luma([9]))
            .save(dir.path().join("a").join("y.png"))
            .unwrap();
        let err = read_image_folder(dir.path(), &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("y.png") && err.contains("--resize"), "{err}");
        let resized = FolderOptions {
            resize: true,
            ..opts
        };
        assert_eq!(read_image_folder(dir.path(), &resized).unwrap().0.len(), 3);
        std::fs::write(dir.path().join("a").join("z.png"), b"not a png").unwrap();
        let err = read_image_folder(dir.path(), &resized)
            .unwrap_err()
            .to_string();
        assert!(err.contains("z.png") && err.contains("decode"), "{err}");
    }
}
