//! The fuzz targets and a small seeded mutation engine, shared by `examples/fuzz` (long runs)
//! and `tests/fuzz.rs` (a few seconds per target in CI).
//!
//! Each target starts from valid inputs built here, mutates them (bit flips, interesting
//! integers at any offset, inserted, deleted, duplicated or spliced ranges, truncation, and,
//! for the compressed formats, the same mutations applied before compression so that the
//! inner parser is reached) and feeds them to the reader. An input passes when the reader
//! returns, accepted or refused with an error; a panic is a finding. Allocation failures abort
//! the process, which the harness cannot catch: the run's exit status shows them.

use std::io::{Cursor, Write};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Plain inputs to mutate, and the encoding applied after the mutation.
pub type Wrap = (fn() -> Vec<Vec<u8>>, fn(&[u8]) -> Vec<u8>);

/// One reader under test.
pub struct Target {
    /// Name used on the command line and in reports.
    pub name: &'static str,
    /// Valid inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Optional structure-aware step: plain inputs to mutate, and their encoding (e.g. the
    /// compression) applied after the mutation.
    pub wrap: Option<Wrap>,
    /// Runs the reader; `Ok` if it accepted the input, `Err` if it refused it.
    pub run: fn(&[u8]) -> Result<(), String>,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs tried.
    pub runs: u64,
    /// Inputs the reader accepted.
    pub accepted: u64,
    /// Inputs refused with an error.
    pub refused: u64,
    /// Inputs that made the reader panic, with the message.
    pub findings: Vec<(String, Vec<u8>)>,
    /// Seconds spent.
    pub seconds: f64,
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn zip_members(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in members {
            z.start_file(*name, o).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

fn idx_images(n: usize) -> Vec<u8> {
    let d = defed::data::embedded_mnist();
    let mut v = vec![0, 0, 8, 3];
    for x in [n as u32, 28, 28] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend(
        d.images[..n * 784]
            .iter()
            .map(|&p| (p * 255.0).round() as u8),
    );
    v
}

fn idx_seeds() -> Vec<Vec<u8>> {
    let labels = [0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1].to_vec();
    vec![idx_images(2), labels]
}

fn npy_seeds() -> Vec<Vec<u8>> {
    use defed::io::{NpyArray, NpyData, write_npy_bytes};
    let d = defed::data::embedded_mnist();
    vec![
        write_npy_bytes(&NpyArray::f32(
            vec![2, 1, 28, 28],
            d.images[..2 * 784].to_vec(),
        )),
        write_npy_bytes(&NpyArray::i64(vec![3], vec![7, 2, 1])),
        write_npy_bytes(&NpyArray {
            shape: vec![2, 2],
            data: NpyData::U8(vec![0, 1, 2, 255]),
        }),
    ]
}

fn png(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut Cursor::new(&mut v), format).unwrap();
    v
}

fn image_seeds() -> Vec<Vec<u8>> {
    let d = defed::data::embedded_mnist();
    let gray = image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([(d.image(0)[(y * 28 + x) as usize] * 255.0) as u8])
    });
    let rgb = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 7]));
    vec![
        png(gray.clone().into(), image::ImageFormat::Png),
        png(gray.into(), image::ImageFormat::Jpeg),
        png(rgb.clone().into(), image::ImageFormat::Png),
        png(rgb.into(), image::ImageFormat::Jpeg),
    ]
}

fn json_seeds() -> Vec<Vec<u8>> {
    let d = defed::data::embedded_mnist();
    let one = serde_json::json!({"pixels": d.image(0), "shape": [1, 28, 28]});
    vec![
        one.to_string().into_bytes(),
        serde_json::json!({"images": [one, one]})
            .to_string()
            .into_bytes(),
        serde_json::json!([{"pixels": [0, 0.5, 1, 0], "shape": [1, 2, 2]}])
            .to_string()
            .into_bytes(),
    ]
}

fn safetensors_seeds() -> Vec<Vec<u8>> {
    vec![
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/lenet-mnist.safetensors"
        ))
        .expect("the embedded LeNet"),
    ]
}

/// Every target.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "idx",
            seeds: idx_seeds,
            wrap: Some((idx_seeds, gzip)),
            run: |b| defed::data::read_idx_bytes(b).map(drop),
        },
        Target {
            name: "npy",
            seeds: npy_seeds,
            wrap: None,
            run: |b| defed::io::read_npy_bytes(b).map(drop),
        },
        Target {
            name: "npz",
            seeds: || {
                npy_seeds()
                    .iter()
                    .map(|n| zip_members(&[("x.npy", n)]))
                    .collect()
            },
            wrap: Some((npy_seeds, |b| {
                zip_members(&[("x.npy", b), ("y.npy", &b[..b.len() / 2])])
            })),
            run: |b| defed::io::read_npz_bytes(b.to_vec()).map(drop),
        },
        Target {
            name: "safetensors",
            seeds: safetensors_seeds,
            wrap: None,
            run: |b| {
                let raw = defed::model::checkpoint::read_checkpoint_bytes("fuzz", b)
                    .map_err(|e| e.to_string())?;
                defed::model::checkpoint::classifier_from_raw(
                    std::path::Path::new("fuzz"),
                    &raw,
                    &defed::default_device(),
                )
                .map(drop)
                .map_err(|e| e.to_string())
            },
        },
        Target {
            name: "mat",
            seeds: || {
                ["svhn-plain.mat", "svhn-compressed.mat"]
                    .iter()
                    .map(|f| {
                        std::fs::read(
                            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                                .join("tests/fixtures/svhn")
                                .join(f),
                        )
                        .expect("the SVHN fixtures")
                    })
                    .collect()
            },
            wrap: None,
            run: |b| defed::io::read_mat_bytes(b).map(drop),
        },
        Target {
            name: "image",
            seeds: image_seeds,
            wrap: None,
            run: |b| {
                let a = defed::serve::decode::image_bytes(b, [1, 28, 28]).map(drop);
                let c = defed::serve::decode::image_bytes(b, [3, 32, 32]).map(drop);
                a.or(c).map_err(|e| e.to_string())
            },
        },
        Target {
            name: "json",
            seeds: json_seeds,
            wrap: None,
            run: |b| {
                let one = defed::serve::decode::json_image(b, [1, 28, 28]).map(drop);
                let batch = defed::serve::decode::json_batch(b, [1, 28, 28], 256).map(drop);
                one.or(batch).map_err(|e| e.to_string())
            },
        },
    ]
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// One to four stacked mutations of `input` (another seed may be spliced in).
pub fn mutate(rng: &mut StdRng, input: &[u8], others: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = v.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] = INTERESTING[rng.random_range(0..5)] as u8;
            }
            2 if len >= 8 => {
                let width = [2usize, 4, 8][rng.random_range(0..3)];
                let i = rng.random_range(0..=len - width);
                let x = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let bytes = if rng.random_bool(0.5) {
                    x.to_le_bytes()
                } else {
                    x.to_be_bytes()
                };
                let from = if rng.random_bool(0.5) { 0 } else { 8 - width };
                v[i..i + width].copy_from_slice(&bytes[from..from + width]);
            }
            3 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..=16);
                let ins: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                v.splice(i..i, ins);
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(64));
                v.drain(i..i + n);
            }
            5 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(64));
                let chunk = v[i..i + n].to_vec();
                let at = rng.random_range(0..=len);
                v.splice(at..at, chunk);
            }
            6 if len > 0 => {
                v.truncate(rng.random_range(0..len));
            }
            7 if !others.is_empty() => {
                let o = &others[rng.random_range(0..others.len())];
                if !o.is_empty() && len > 0 {
                    let i = rng.random_range(0..len);
                    let j = rng.random_range(0..o.len());
                    let n = rng.random_range(1..=(o.len() - j).min(len - i).min(256));
                    v[i..i + n].copy_from_slice(&o[j..j + n]);
                }
            }
            _ if len > 0 => {
                // A run of one byte value: makes lengths and counts large or zero.
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(32));
                let b = INTERESTING[rng.random_range(0..5)] as u8;
                v[i..i + n].fill(b);
            }
            _ => {}
        }
    }
    v.truncate(max_len);
    v
}

/// Fuzzes `target` for `seconds` from `seed`; inputs are kept in a small corpus when they are
/// accepted (they reach deeper code), up to 64 of them.
pub fn fuzz(target: &Target, seconds: f64, seed: u64) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = (target.seeds)();
    let mut corpus = seeds.clone();
    let plain = target.wrap.map(|(plain, encode)| (plain(), encode));
    let mut report = Report::default();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while start.elapsed() < limit {
        let base = &corpus[rng.random_range(0..corpus.len())];
        let input = match &plain {
            // Half the time, mutate the plain form of a seed and encode it.
            Some((plain, encode)) if rng.random_bool(0.5) => {
                let p = &plain[rng.random_range(0..plain.len())];
                encode(&mutate(&mut rng, p, plain, 1 << 20))
            }
            _ => mutate(&mut rng, base, &seeds, 1 << 20),
        };
        report.runs += 1;
        match std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input))) {
            Ok(Ok(())) => {
                report.accepted += 1;
                if corpus.len() < 64 {
                    corpus.push(input);
                }
            }
            Ok(Err(_)) => report.refused += 1,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                if report.findings.len() < 16 {
                    report.findings.push((msg, input));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    report.seconds = start.elapsed().as_secs_f64();
    report
}
