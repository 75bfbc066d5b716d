//! Request bodies to images: PNG or JPEG bytes, or JSON `{"pixels": [...], "shape": [C, H, W]}`.
//!
//! Every function checks the image against the model's input shape and returns a message a
//! client can act on; nothing here panics on any input.

use std::io::Cursor;

use serde::Deserialize;

use crate::data::validate_pixels;
use crate::error::{Error, Result};

/// The largest width or height decoded at all, whatever the model: a guard against images that
/// claim huge sizes to exhaust memory.
const MAX_DECODED_SIDE: u32 = 4096;

/// One image as JSON: flat pixels in `[0, 1]`, planar `C x H x W`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonImage {
    /// `C * H * W` values in `[0, 1]`.
    pub pixels: Vec<f32>,
    /// `[C, H, W]`.
    pub shape: Vec<usize>,
}

/// A batch as JSON: `{"images": [...]}` or a bare array of images.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum JsonBatch {
    /// `{"images": [{"pixels": ..., "shape": ...}, ...]}`.
    Wrapped {
        /// The images.
        images: Vec<JsonImage>,
    },
    /// `[{"pixels": ..., "shape": ...}, ...]`.
    List(Vec<JsonImage>),
}

impl JsonBatch {
    /// The images, whichever form was sent.
    pub(crate) fn into_images(self) -> Vec<JsonImage> {
        match self {
            JsonBatch::Wrapped { images } => images,
            JsonBatch::List(v) => v,
        }
    }
}

fn describe(shape: [usize; 3]) -> String {
    let [c, h, w] = shape;
    let kind = match c {
        1 => "grayscale",
        3 => "RGB",
        _ => "multi-channel",
    };
    format!("{c}x{h}x{w} ({kind}, {w} wide, {h} high)")
}

/// Checks a JSON image against the model's input shape `[C, H, W]` and its pixel values.
pub(crate) fn check_json_image(img: JsonImage, shape: [usize; 3]) -> Result<Vec<f32>> {
    if img.shape != shape {
        return Err(Error::Shape(format!(
            "image shape {:?} does not match the model's input {}; send \"shape\": {:?}",
            img.shape,
            describe(shape),
            shape
        )));
    }
    let want: usize = shape.iter().product();
    if img.pixels.len() != want {
        return Err(Error::Shape(format!(
            "{} pixel values for shape {:?}, which needs {want}",
            img.pixels.len(),
            shape
        )));
    }
    validate_pixels(&img.pixels)?;
    Ok(img.pixels)
}

/// Parses a JSON body holding one image.
pub fn json_image(body: &[u8], shape: [usize; 3]) -> Result<Vec<f32>> {
    let img: JsonImage = serde_json::from_slice(body).map_err(|e| {
        Error::Invalid(format!(
            "bad JSON image (expected {{\"pixels\": [...], \"shape\": [C, H, W]}}): {e}"
        ))
    })?;
    check_json_image(img, shape)
}

/// Parses a JSON body holding a batch of images; returns the concatenated pixels and the count.
pub fn json_batch(body: &[u8], shape: [usize; 3], max_images: usize) -> Result<(Vec<f32>, usize)> {
    let batch: JsonBatch = serde_json::from_slice(body).map_err(|e| {
        Error::Invalid(format!(
            "bad JSON batch (expected {{\"images\": [{{\"pixels\": [...], \"shape\": [C, H, W]}}, ...]}}): {e}"
        ))
    })?;
    let images = batch.into_images();
    check_count(images.len(), max_images)?;
    let mut out = Vec::with_capacity(images.len() * shape.iter().product::<usize>());
    for (i, img) in images.into_iter().enumerate() {
        out.extend(check_json_image(img, shape).map_err(|e| prefix(i, e))?);
    }
    let n = out.len() / shape.iter().product::<usize>();
    Ok((out, n))
}

/// Refuses an empty batch or one over the per-request limit.
pub(crate) fn check_count(n: usize, max_images: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Invalid("the batch holds no images".into()));
    }
    if n > max_images {
        return Err(Error::Invalid(format!(
            "{n} images in one request; the limit is {max_images} (split the batch)"
        )));
    }
    Ok(())
}

/// Names the offending image of a batch in an error.
pub fn prefix(i: usize, e: Error) -> Error {
    match e {
        Error::Shape(m) => Error::Shape(format!("image {i}: {m}")),
        Error::Invalid(m) => Error::Invalid(format!("image {i}: {m}")),
        other => other,
    }
}

/// Decodes PNG or JPEG bytes into planar pixels, refusing images whose size or channel count
/// differs from the model's input (no silent conversion: a colour image sent to a grayscale
/// model is a client error). An alpha channel is ignored.
pub fn image_bytes(bytes: &[u8], shape: [usize; 3]) -> Result<Vec<f32>> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Invalid(format!("cannot read the image: {e}")))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(f) => {
            return Err(Error::Invalid(format!(
                "{f:?} images are not accepted; send PNG or JPEG"
            )));
        }
        None => {
            return Err(Error::Invalid(
                "the body is not a PNG or JPEG image (send image/png, image/jpeg, or JSON)".into(),
            ));
        }
    }
    // The size from the header first: an image of the wrong size is refused before a single
    // pixel is decoded, whatever it claims.
    let (w, h) = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .and_then(|r| r.into_dimensions().map_err(std::io::Error::other))
        .map_err(|e| Error::Invalid(format!("cannot read the image header: {e}")))?;
    if (w as usize, h as usize) != (shape[2], shape[1]) {
        return Err(Error::Shape(format!(
            "image is {w} wide and {h} high; the model takes {}",
            describe(shape)
        )));
    }
    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    limits.max_alloc = Some(64 << 20);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| Error::Invalid(format!("cannot decode the image: {e}")))?;
    let [c, h, w] = shape;
    if (img.width() as usize, img.height() as usize) != (w, h) {
        return Err(Error::Shape(format!(
            "image is {} wide and {} high; the model takes {}",
            img.width(),
            img.height(),
            describe(shape)
        )));
    }
    let color = img.color();
    let got = color.channel_count() as usize - usize::from(color.has_alpha());
    if got != c {
        return Err(Error::Shape(format!(
            "image has {got} colour channel(s) ({color:?}); the model takes {}",
            describe(shape)
        )));
    }
    crate::data::to_planar(&img, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(img: image::DynamicImage) -> Vec<u8> {
        let mut v = Vec::new();
        img.write_to(&mut Cursor::new(&mut v), image::ImageFormat::Png)
            .unwrap();
        v
    }

    #[test]
    fn png_round_trip_and_refusals() {
        let g = image::GrayImage::from_fn(4, 2, |x, y| image::Luma([(x * 60 + y) as u8]));
        let px = image_bytes(&png(g.into()), [1, 2, 4]).unwrap();
        assert_eq!(px.len(), 8);
        assert_eq!(px[1], 60.0 / 255.0);
        let rgb = image::RgbImage::new(4, 2);
        let e = image_bytes(&png(rgb.into()), [1, 2, 4]).unwrap_err();
        assert!(e.to_string().contains("3 colour channel"), "{e}");
        let e = image_bytes(&png(image::GrayImage::new(5, 2).into()), [1, 2, 4]).unwrap_err();
        assert!(e.to_string().contains("5 wide"), "{e}");
        // A 4000 x 4000 PNG (16 MB decoded) is refused from its header alone: cut after the
        // header, it still gets the size error, not a decoding one.
        let mut big = png(image::GrayImage::new(4000, 4000).into());
        big.truncate(64);
        let e = image_bytes(&big, [1, 28, 28]).unwrap_err();
        assert!(e.to_string().contains("4000 wide"), "{e}");
        let e = image_bytes(b"not an image", [1, 2, 4]).unwrap_err();
        assert!(e.to_string().contains("PNG or JPEG"), "{e}");
        let mut broken = png(image::GrayImage::new(4, 2).into());
        broken.truncate(40);
        assert!(image_bytes(&broken, [1, 2, 4]).is_err());
    }

    #[test]
    fn json_checks() {
        let ok = br#"{"pixels": [0, 0.5, 1, 0], "shape": [1, 2, 2]}"#;
        assert_eq!(json_image(ok, [1, 2, 2]).unwrap(), vec![0.0, 0.5, 1.0, 0.0]);
        let e = json_image(ok, [1, 28, 28]).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let bad = br#"{"pixels": [0, 0.5, 2, 0], "shape": [1, 2, 2]}"#;
        assert!(json_image(bad, [1, 2, 2]).is_err());
        let short = br#"{"pixels": [0], "shape": [1, 2, 2]}"#;
        assert!(json_image(short, [1, 2, 2]).is_err());
        let batch = br#"{"images": [{"pixels": [0, 0, 0, 0], "shape": [1, 2, 2]},
                                    {"pixels": [1, 1, 1, 1], "shape": [1, 2, 2]}]}"#;
        assert_eq!(json_batch(batch, [1, 2, 2], 8).unwrap().1, 2);
        let e = json_batch(batch, [1, 2, 2], 1).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        let list = br#"[{"pixels": [0, 0, 0, 0], "shape": [1, 2, 2]}]"#;
        assert_eq!(json_batch(list, [1, 2, 2], 8).unwrap().1, 1);
        assert!(json_batch(b"[]", [1, 2, 2], 8).is_err());
    }
}
