use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use defed::data::{load_spec, read_inputs, read_labels};
use defed::model::load_classifier;

/// How results are printed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// Comma-separated values.
    Csv,
    /// One JSON document.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Classifier checkpoint (defed safetensors, or an original `.pth`).
    #[arg(long)]
    classifier: PathBuf,
    /// Image inputs: IDX image files, `.npy` arrays (N x C x H x W in [0,1] or uint8), `.npz`
    /// (`defed benign` / `attack` output: its adv, x or images array), PNG/JPEG files, folders
    /// of images, or class folders.
    inputs: Vec<PathBuf>,
    /// A named data set instead of files: `mnist-embedded[:train|val|train-val]`,
    /// `mnist[:test|train]`, `fashion-mnist[:...]`, `cifar10[:...]`.
    #[arg(long, conflicts_with = "inputs")]
    dataset: Option<String>,
    /// True labels (IDX labels file or `.npy`), to report accuracy.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Share of the training split that `:val` / `:train-val` hold out.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Seed of the validation split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Output format of the per-image labels.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Print only the summary line, not one line per image.
    #[arg(long)]
    summary: bool,
}

pub fn run(a: Args) -> Result<()> {
    let device = defed::default_device();
    let (clf, meta) = load_classifier(&a.classifier, &device)?;
    let [c, h, w] = clf.input_shape();
    let (set, names, has_labels) = if let Some(spec) = &a.dataset {
        let set = load_spec(spec, a.val_fraction, a.seed)?;
        let names = set.indices.iter().map(|i| format!("{spec}#{i}")).collect();
        (set, names, true)
    } else {
        if a.inputs.is_empty() {
            bail!("give input images, or --dataset NAME");
        }
        let inputs = read_inputs(&a.inputs, c, [h, w])?;
        let names = inputs.names.clone();
        let file_labels = match &a.labels {
            Some(p) => Some(read_labels(p)?),
            None => None,
        };
        let has = file_labels.is_some() || inputs.labels.is_some();
        (inputs.into_set(file_labels)?, names, has)
    };
    if set.shape != [c, h, w] {
        bail!(
            "the {} classifier takes {c}x{h}x{w} images, the inputs are {}x{}x{}",
            meta.architecture,
            set.shape[0],
            set.shape[1],
            set.shape[2]
        );
    }
    if has_labels {
        set.check_labels(clf.num_classes())?;
    }
    let pred = defed::eval::predict(&clf, &set, a.batch_size, &device)
        .context("classifying the images")?;
    let mut out = std::io::stdout().lock();
    if !a.summary {
        match a.format {
            Format::Table => {
                for (i, p) in pred.iter().enumerate() {
                    if has_labels {
                        writeln!(out, "{:<40} {p} (true {})", names[i], set.labels[i])?;
                    } else {
                        writeln!(out, "{:<40} {p}", names[i])?;
                    }
                }
            }
            Format::Csv => {
                writeln!(
                    out,
                    "image,label{}",
                    if has_labels { ",true_label" } else { "" }
                )?;
                for (i, p) in pred.iter().enumerate() {
                    let name = names[i].replace('"', "\"\"");
                    if has_labels {
                        writeln!(out, "\"{name}\",{p},{}", set.labels[i])?;
                    } else {
                        writeln!(out, "\"{name}\",{p}")?;
                    }
                }
            }
            Format::Json => {
                let rows: Vec<_> = pred
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let mut v = serde_json::json!({"image": names[i], "label": p});
                        if has_labels {
                            v["true_label"] = serde_json::json!(set.labels[i]);
                        }
                        v
                    })
                    .collect();
                let acc = has_labels.then(|| defed::eval::accuracy(&pred, &set.labels));
                let doc = serde_json::json!({"predictions": rows, "accuracy": acc});
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
                return Ok(());
            }
        }
    }
    if has_labels {
        let right = pred.iter().zip(&set.labels).filter(|(p, l)| p == l).count();
        writeln!(
            out,
            "accuracy {:.2}% ({right}/{})",
            100.0 * right as f64 / set.len() as f64,
            set.len()
        )?;
    } else {
        writeln!(out, "classified {} images", set.len())?;
    }
    Ok(())
}

/// Arguments of `defed denoise-quality`.
#[derive(Debug, clap::Args)]
pub struct QualityArgs {
    /// The denoiser checkpoint.
    #[arg(long)]
    denoiser: PathBuf,
    /// The classifier whose accuracy on the denoised images is measured.
    #[arg(long)]
    classifier: PathBuf,
    /// Clean test images: a named split ...
    #[arg(long, default_value = "mnist:test")]
    dataset: String,
    /// ... or image files with --labels.
    #[arg(long, num_args = 1.., conflicts_with = "dataset")]
    images: Vec<PathBuf>,
    /// Labels of --images.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Noise level sigma (default: the denoiser's training noise).
    #[arg(long)]
    noise: Option<f32>,
    /// Measure the first N images.
    #[arg(long)]
    num: Option<usize>,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `defed denoise-quality`: accuracy, PSNR and SSIM of a denoiser on noisy images.
pub fn quality(a: QualityArgs) -> Result<()> {
    let device = defed::default_device();
    let (clf, _) = load_classifier(&a.classifier, &device)?;
    let (den, meta) = defed::model::load_denoiser(&a.denoiser, &device, &Default::default())?;
    let [c, h, w] = clf.input_shape();
    let mut set = if a.images.is_empty() {
        load_spec(&a.dataset, 0.1, 0)?
    } else {
        let labels = read_labels(a.labels.as_ref().context("--images needs --labels")?)?;
        read_inputs(&a.images, c, [h, w])?.into_set(Some(labels))?
    };
    if let Some(n) = a.num {
        set = set.take(n);
    }
    set.check_labels(clf.num_classes())?;
    let noise = a
        .noise
        .or(meta.noise)
        .context("the checkpoint records no noise level: pass --noise")?;
    let q = defed::eval::denoiser_quality(&den, &clf, &set, noise, a.seed, 250, &device)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&q)?);
    } else {
        println!(
            "{} images, noise {}: denoised accuracy {:.2}%, PSNR {:.2} dB, SSIM {:.4}; noisy accuracy {:.2}%, PSNR {:.2} dB, SSIM {:.4}",
            q.images,
            q.noise,
            100.0 * q.accuracy,
            q.psnr,
            q.ssim,
            100.0 * q.noisy_accuracy,
            q.noisy_psnr,
            q.noisy_ssim
        );
    }
    Ok(())
}
