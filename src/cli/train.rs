use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use defed::data::load_train_val;
use defed::model::{Architecture, BaseNet, Defed, EdgeMethod, LeNet, SvhnNet, load_classifier};
use defed::train::{DenoiserTrainConfig, RunOptions, train_classifier, train_denoiser};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Train a classifier (LeNet-5 for 1x28x28, the SVHN VGG for Cx32x32).
    Classifier(ClassifierArgs),
    /// Train BaseNet or Defed denoisers, one per (noise level, alpha).
    Denoiser(DenoiserArgs),
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// Training data: mnist-embedded, mnist, fashion-mnist, cifar10, a class folder, or an
    /// .npz with x and y.
    #[arg(long, default_value = "mnist-embedded")]
    dataset: String,
    /// Image channels and side, for class folders.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Image side (height = width), for class folders.
    #[arg(long, default_value_t = 28)]
    size: usize,
    /// Share of the training data held out for validation (the test split is never used).
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Epochs after which the learning rate is multiplied by 0.1.
    #[arg(long, num_args = 0..)]
    milestones: Vec<usize>,
    /// Seed for the split, batch order, noise and initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Continue interrupted runs from their last completed epoch.
    #[arg(long)]
    resume: bool,
    /// Use only the first N training images (quick experiments).
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct ClassifierArgs {
    #[command(flatten)]
    common: Common,
    /// Architecture (default: lenet for 28x28, svhn-vgg for 32x32).
    #[arg(long)]
    arch: Option<Architecture>,
    /// Base name of the files written.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DenoiserArgs {
    #[command(flatten)]
    common: Common,
    /// defed or basenet.
    #[arg(long, default_value = "defed")]
    arch: Architecture,
    /// Edge detector of Defed.
    #[arg(long, default_value = "laplacian")]
    edge: EdgeMethod,
    /// The frozen classifier of the class loss.
    #[arg(long)]
    classifier: PathBuf,
    /// Noise levels sigma (1/255 units); one model each.
    #[arg(long, num_args = 1.., default_values_t = vec![40.0])]
    noise: Vec<f32>,
    /// Class-loss weights; one model each.
    #[arg(long, num_args = 1.., default_values_t = vec![1.0])]
    alpha: Vec<f32>,
    /// Epochs over which the class-loss weight ramps from 0 up to alpha (0: none).
    #[arg(long, default_value_t = 0)]
    alpha_warmup: usize,
    /// Train only shard i of n of the (noise, alpha) grid, e.g. 0/4 (for parallel machines).
    #[arg(long, default_value = "0/1")]
    shard: String,
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

fn run_options(c: &Common, name: String, dataset: String) -> RunOptions {
    RunOptions {
        out_dir: c.out.clone(),
        name,
        epochs: c.epochs,
        batch_size: c.batch_size,
        lr: c.lr,
        milestones: c.milestones.clone(),
        seed: c.seed,
        resume: c.resume,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        source: command_line(),
        dataset,
    }
}

fn dataset_tag(spec: &str) -> String {
    std::path::Path::new(spec)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| spec.to_string())
        .replace(':', "-")
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Classifier(a) => classifier(a),
        Command::Denoiser(a) => denoiser(a),
    }
}

fn classifier(a: ClassifierArgs) -> Result<()> {
    let c = &a.common;
    let (train, val) = load_train_val(
        &c.dataset,
        c.channels,
        [c.size, c.size],
        c.val_fraction,
        c.seed,
        c.limit,
    )?;
    let arch = a.arch.unwrap_or(if train.shape[1] == 28 {
        Architecture::Lenet
    } else {
        Architecture::SvhnVgg
    });
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", dataset_tag(&c.dataset), arch));
    let run = run_options(c, name, c.dataset.clone());
    let device = defed::autodiff_device();
    device.seed(c.seed);
    eprintln!(
        "training {arch} on {} images ({} held out for validation), {} epochs",
        train.len(),
        val.len(),
        c.epochs
    );
    let progress = match arch {
        Architecture::Lenet => {
            if train.shape != [1, 28, 28] {
                bail!("lenet needs 1x28x28 images, the data is {:?}", train.shape);
            }
            train_classifier(LeNet::new(&device), &train, &val, &run, &device)?
        }
        Architecture::SvhnVgg => {
            if train.shape[1..] != [32, 32] {
                bail!(
                    "svhn-vgg needs Cx32x32 images, the data is {:?}",
                    train.shape
                );
            }
            train_classifier(
                SvhnNet::new(train.shape[0], &device),
                &train,
                &val,
                &run,
                &device,
            )?
        }
        other => bail!("{other} is a denoiser: use `defed train denoiser`"),
    };
    let best = progress.best.get("val_accuracy").copied().unwrap_or(0.0);
    println!(
        "best validation accuracy {:.2}%; checkpoint {}; log {}",
        100.0 * best,
        run.file(".safetensors").display(),
        run.file(".log.csv").display()
    );
    Ok(())
}

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s.split_once('/').context("--shard takes i/n, e.g. 0/4")?;
    let (i, n): (usize, usize) = (i.parse()?, n.parse()?);
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 <= i < n");
    }
    Ok((i, n))
}

fn denoiser(a: DenoiserArgs) -> Result<()> {
    let c = &a.common;
    let (shard, shards) = parse_shard(&a.shard)?;
    if !matches!(a.arch, Architecture::Defed | Architecture::Basenet) {
        bail!("--arch must be defed or basenet");
    }
    let (train, val) = load_train_val(
        &c.dataset,
        c.channels,
        [c.size, c.size],
        c.val_fraction,
        c.seed,
        c.limit,
    )?;
    let device = defed::autodiff_device();
    let (clf, _) = load_classifier(&a.classifier, &device)?;
    let grid: Vec<(f32, f32)> = a
        .noise
        .iter()
        .flat_map(|&n| a.alpha.iter().map(move |&al| (n, al)))
        .collect();
    for (k, &(noise, alpha)) in grid.iter().enumerate() {
        if k % shards != shard {
            continue;
        }
        let arch_tag = match a.arch {
            Architecture::Defed => format!("defed-{}", a.edge),
            _ => "basenet".to_string(),
        };
        let name = format!(
            "{}-{arch_tag}-alpha={alpha}-noise={noise}",
            dataset_tag(&c.dataset)
        );
        let run = run_options(c, name, c.dataset.clone());
        device.seed(defed::train::derive_seed(
            c.seed,
            noise.to_bits() as u64,
            alpha.to_bits() as u64,
        ));
        eprintln!(
            "training {} (noise {noise}, alpha {alpha}) on {} images, {} epochs",
            a.arch,
            train.len(),
            c.epochs
        );
        let cfg = DenoiserTrainConfig {
            noise,
            alpha,
            edge: (a.arch == Architecture::Defed).then_some(a.edge),
            alpha_warmup: a.alpha_warmup,
        };
        let channels = train.shape[0];
        let progress = match a.arch {
            Architecture::Defed => train_denoiser(
                Defed::new(channels, a.edge, &device),
                &clf,
                &train,
                &val,
                &cfg,
                &run,
                &device,
            )?,
            _ => train_denoiser(
                BaseNet::new(channels, &device),
                &clf,
                &train,
                &val,
                &cfg,
                &run,
                &device,
            )?,
        };
        if let Some(last) = progress.history.last() {
            println!(
                "{}: val accuracy {:.2}%, PSNR {:.2} dB, SSIM {:.4} (last epoch); best checkpoint {}",
                run.name,
                100.0 * last["val_accuracy"],
                last["val_psnr"],
                last["val_ssim"],
                run.file(".safetensors").display()
            );
        }
    }
    Ok(())
}
