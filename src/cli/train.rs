use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use defed::attack::Norm;
use defed::data::{Augment, load_train_val};
use defed::model::{
    Architecture, BaseNet, Classifier, Defed, Denoiser, EdgeMethod, LeNet, MadryCnn, MadryWidths,
    SvhnNet, load_classifier, load_denoiser,
};
use defed::train::{
    AdversarialConfig, AdversarialMethod, ClassifierTrainConfig, DenoiserAdversarial,
    DenoiserTrainConfig, DetectionSelection, RunOptions, train_classifier, train_denoiser,
};

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
    /// Validate and save an exponential moving average of the weights, with this decay per
    /// optimiser step (e.g. 0.995; warmed up as min(decay, (1 + t) / (10 + t))).
    #[arg(long, value_name = "DECAY")]
    average: Option<f64>,
}

/// Seeded training-time augmentation of the clean images (a new draw per image and epoch).
#[derive(Debug, clap::Args)]
struct AugmentArgs {
    /// Augmentation: random shifts of up to N whole pixels (0: none).
    #[arg(long, default_value_t = 0)]
    shift: usize,
    /// Augmentation: random rotations of up to this many degrees either way (0: none).
    #[arg(long, default_value_t = 0.0)]
    rotate: f32,
    /// Augmentation: random scalings by 1 +- up to this factor (0: none).
    #[arg(long, default_value_t = 0.0)]
    scale: f32,
    /// Augmentation: elastic distortion strength in pixels (Simard et al.; 0: none).
    #[arg(long, default_value_t = 0.0)]
    elastic_alpha: f32,
    /// Smoothness of the elastic distortion (Gaussian sigma, pixels).
    #[arg(long, default_value_t = 4.0)]
    elastic_sigma: f32,
}

impl From<&AugmentArgs> for Augment {
    fn from(a: &AugmentArgs) -> Self {
        Augment {
            shift: a.shift,
            rotate: a.rotate,
            scale: a.scale,
            elastic_alpha: a.elastic_alpha,
            elastic_sigma: a.elastic_sigma,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ClassifierArgs {
    #[command(flatten)]
    common: Common,
    /// Architecture: lenet, madry-cnn (the MNIST robustness CNN of Madry et al.) or svhn-vgg
    /// (default: lenet for 28x28, svhn-vgg for 32x32).
    #[arg(long)]
    arch: Option<Architecture>,
    /// Layer widths of madry-cnn: conv1,conv2,hidden.
    #[arg(long, default_value = "32,64,1024")]
    widths: MadryWidths,
    /// Base name of the files written.
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    augment: AugmentArgs,
    /// Train against an adversary: pgd (Madry et al.) or trades (Zhang et al.).
    #[arg(long)]
    adversarial: Option<AdversarialMethod>,
    /// Threat model of adversarial training: linf or l2.
    #[arg(long, default_value = "linf")]
    adv_norm: Norm,
    /// Budget of adversarial training.
    #[arg(long, default_value_t = 0.3)]
    adv_eps: f32,
    /// PGD steps per training batch.
    #[arg(long, default_value_t = 10)]
    adv_steps: usize,
    /// PGD step size at the full budget (default: 2.5 eps / steps).
    #[arg(long)]
    adv_step_size: Option<f32>,
    /// Epochs over which the budget grows linearly from 0 to --adv-eps.
    #[arg(long, default_value_t = 0.0)]
    adv_ramp: f64,
    /// TRADES' weight of the KL term.
    #[arg(long, default_value_t = 6.0)]
    trades_beta: f32,
    /// Validation images attacked after every epoch to pick the best checkpoint.
    #[arg(long, default_value_t = 500)]
    val_attack_images: usize,
    /// PGD steps of that validation attack.
    #[arg(long, default_value_t = 20)]
    val_attack_steps: usize,
    /// With adversarial training, keep the best clean validation accuracy among the epochs
    /// whose robust validation accuracy is at least this (default: keep the most robust).
    #[arg(long)]
    min_val_robust: Option<f64>,
    /// Start from this classifier checkpoint (fine-tuning) instead of random weights; its
    /// architecture and widths are kept.
    #[arg(long)]
    init: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DenoiserArgs {
    #[command(flatten)]
    common: Common,
    /// Augmentation of the clean images before the noise (e.g. the classifier's own recipe, so
    /// the class loss sees digits the classifier is less sure of).
    #[command(flatten)]
    augment: AugmentArgs,
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
    /// Start from these denoiser checkpoints instead of fresh weights (fine-tuning): one for
    /// every model, or one per noise level (matched by the noise level in its metadata).
    #[arg(long, num_args = 1..)]
    init: Vec<PathBuf>,
    /// Train on adversarial examples too: threats as norm:eps, e.g. linf:0.3 l2:2. Part of
    /// each batch (--adv-fraction) is crafted by PGD against the classifier behind the
    /// denoiser being trained; the Gaussian-only default is the paper's recipe.
    #[arg(long, num_args = 1.., value_parser = parse_threat)]
    adv_threat: Vec<(Norm, f32)>,
    /// PGD steps for those examples (random start, step 2.5 eps / steps).
    #[arg(long, default_value_t = 10)]
    adv_steps: usize,
    /// Share of each batch that is adversarial.
    #[arg(long, default_value_t = 0.5)]
    adv_fraction: f32,
    /// Select by detection quality too: after every epoch, log the ROC-AUC and the detection
    /// rate at --detect-fpr of the denoiser's adversarial score on PGD examples crafted (once,
    /// seeded) against the frozen classifier from validation digits, and keep the best epoch
    /// by that rate in <name>-best-detect.safetensors.
    #[arg(long)]
    detect: bool,
    /// Threats of those validation attacks, as norm:eps (L1, L2 or Linf).
    #[arg(long, num_args = 1.., value_parser = parse_threat, default_values = ["l1:15", "l2:1.5", "linf:0.3"])]
    detect_threats: Vec<(Norm, f32)>,
    /// Correctly classified validation digits attacked (and scored as benign).
    #[arg(long, default_value_t = 500)]
    detect_images: usize,
    /// PGD steps of the validation attacks.
    #[arg(long, default_value_t = 20)]
    detect_steps: usize,
    /// False-positive rate at which the detection rate is read.
    #[arg(long, default_value_t = 0.02)]
    detect_fpr: f64,
    /// Only epochs with at least this validation PSNR (dB) compete for the best detection
    /// (while none reaches it, the epoch nearest it is kept).
    #[arg(long, requires = "detect")]
    detect_min_psnr: Option<f64>,
}

/// The `--init` checkpoint for the model of noise level `noise`: the only one given, or the
/// one whose metadata names that noise level.
fn initial_denoiser(
    paths: &[PathBuf],
    noise: f32,
    device: &defed::backend::Device,
) -> Result<Option<Denoiser>> {
    let mut found = Vec::new();
    for p in paths {
        let (d, meta) = load_denoiser(p, device, &Default::default())
            .with_context(|| format!("--init {}", p.display()))?;
        if paths.len() == 1 || meta.noise == Some(noise) {
            found.push(d.trainable());
        }
    }
    match found.len() {
        0 if paths.is_empty() => Ok(None),
        0 => bail!("--init: no checkpoint is of noise level {noise}"),
        1 => Ok(found.pop()),
        _ => bail!("--init: several checkpoints are of noise level {noise}"),
    }
}

fn parse_threat(s: &str) -> std::result::Result<(Norm, f32), String> {
    let (n, e) = s
        .split_once(':')
        .ok_or_else(|| format!("a threat is norm:eps, e.g. linf:0.3, not {s:?}"))?;
    let norm: Norm = n.parse()?;
    let eps: f32 = e
        .parse()
        .map_err(|_| format!("bad eps {e:?} in threat {s:?}"))?;
    if !(matches!(norm, Norm::L1 | Norm::L2 | Norm::Linf) && eps.is_finite() && eps > 0.0) {
        return Err(format!("threat {s:?}: need l1, l2 or linf and eps > 0"));
    }
    Ok((norm, eps))
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
    let device = defed::autodiff_device();
    device.seed(c.seed);
    let init = match &a.init {
        Some(p) => {
            let (m, _) =
                load_classifier(p, &device).with_context(|| format!("--init {}", p.display()))?;
            if let Some(arch) = a.arch
                && arch != m.architecture()
            {
                bail!(
                    "--init {} is a {}, not a {arch}",
                    p.display(),
                    m.architecture()
                );
            }
            if m.input_shape() != train.shape {
                bail!(
                    "--init {} takes {:?} images, the data is {:?}",
                    p.display(),
                    m.input_shape(),
                    train.shape
                );
            }
            Some(m.trainable())
        }
        None => None,
    };
    let arch = init
        .as_ref()
        .map(|m| m.architecture())
        .or(a.arch)
        .unwrap_or(if train.shape[1] == 28 {
            Architecture::Lenet
        } else {
            Architecture::SvhnVgg
        });
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", dataset_tag(&c.dataset), arch));
    let run = run_options(c, name, c.dataset.clone());
    eprintln!(
        "training {arch} on {} images ({} held out for validation), {} epochs",
        train.len(),
        val.len(),
        c.epochs
    );
    let cfg = ClassifierTrainConfig {
        augment: Augment::from(&a.augment),
        adversarial: a.adversarial.map(|method| AdversarialConfig {
            method,
            norm: a.adv_norm,
            eps: a.adv_eps,
            steps: a.adv_steps,
            step_size: a
                .adv_step_size
                .unwrap_or(2.5 * a.adv_eps / a.adv_steps.max(1) as f32),
            ramp_epochs: a.adv_ramp,
            beta: a.trades_beta,
            val_images: a.val_attack_images,
            val_steps: a.val_attack_steps,
            min_val_robust: a.min_val_robust,
        }),
        average: c.average,
    };
    if let Some(adv) = &cfg.adversarial {
        eprintln!(
            "adversarial training: {:?}, {} eps {} ({} steps of {}), ramp {} epochs",
            adv.method,
            adv.norm.name(),
            adv.eps,
            adv.steps,
            adv.step_size,
            adv.ramp_epochs
        );
    }
    let progress = match arch {
        Architecture::Lenet => {
            if train.shape != [1, 28, 28] {
                bail!("lenet needs 1x28x28 images, the data is {:?}", train.shape);
            }
            let model = match init {
                Some(Classifier::Lenet(m)) => *m,
                _ => LeNet::new(&device),
            };
            train_classifier(model, &train, &val, &cfg, &run, &device)?
        }
        Architecture::MadryCnn => {
            if train.shape[1..] != [28, 28] {
                bail!(
                    "madry-cnn needs Cx28x28 images, the data is {:?}",
                    train.shape
                );
            }
            let model = match init {
                Some(Classifier::Madry(m)) => *m,
                _ => MadryCnn::new(train.shape[0], a.widths, &device),
            };
            train_classifier(model, &train, &val, &cfg, &run, &device)?
        }
        Architecture::SvhnVgg => {
            if train.shape[1..] != [32, 32] {
                bail!(
                    "svhn-vgg needs Cx32x32 images, the data is {:?}",
                    train.shape
                );
            }
            let model = match init {
                Some(Classifier::SvhnVgg(m)) => *m,
                _ => SvhnNet::new(train.shape[0], &device),
            };
            train_classifier(model, &train, &val, &cfg, &run, &device)?
        }
        other => bail!("{other} is a denoiser: use `defed train denoiser`"),
    };
    let (what, best) = if let Some(&r) = progress.best.get("val_robust_accuracy") {
        ("robust validation accuracy", r)
    } else if progress
        .best
        .get("val_accuracy_above_floor")
        .is_some_and(|&v| v < 0.0)
    {
        (
            "validation accuracy (no epoch reached --min-val-robust)",
            0.0,
        )
    } else if let Some(&epoch) = progress.best_epoch.get("val_accuracy_above_floor") {
        (
            "validation accuracy above the robust floor",
            progress
                .history
                .get(epoch - 1)
                .and_then(|h| h.get("val_accuracy").copied())
                .unwrap_or(0.0),
        )
    } else {
        (
            "validation accuracy",
            progress.best.get("val_accuracy").copied().unwrap_or(0.0),
        )
    };
    println!(
        "best {what} {:.2}%; checkpoint {}; log {}; curves {}",
        100.0 * best,
        run.file(".safetensors").display(),
        run.file(".log.csv").display(),
        run.file(".png").display()
    );
    Ok(())
}

fn denoiser(a: DenoiserArgs) -> Result<()> {
    let c = &a.common;
    let shard = defed::eval::merge::parse_shard(&a.shard)?;
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
        if !defed::eval::merge::in_shard(k, shard) {
            continue;
        }
        let arch_tag = match a.arch {
            Architecture::Defed => format!("defed-{}", a.edge),
            _ => "basenet".to_string(),
        };
        let adv_tag = if a.adv_threat.is_empty() { "" } else { "-adv" };
        let name = format!(
            "{}-{arch_tag}{adv_tag}-alpha={alpha}-noise={noise}",
            dataset_tag(&c.dataset)
        );
        let run = run_options(c, name, c.dataset.clone());
        device.seed(defed::train::derive_seed(
            c.seed,
            noise.to_bits() as u64,
            alpha.to_bits() as u64,
        ));
        let cfg = DenoiserTrainConfig {
            noise,
            alpha,
            edge: (a.arch == Architecture::Defed).then_some(a.edge),
            alpha_warmup: a.alpha_warmup,
            adversarial: (!a.adv_threat.is_empty()).then(|| DenoiserAdversarial {
                threats: a.adv_threat.clone(),
                steps: a.adv_steps,
                fraction: a.adv_fraction,
            }),
            detection: a.detect.then(|| DetectionSelection {
                threats: a.detect_threats.clone(),
                images: a.detect_images,
                steps: a.detect_steps,
                fpr: a.detect_fpr,
                min_psnr: a.detect_min_psnr,
            }),
            average: c.average,
            augment: Augment::from(&a.augment),
        };
        cfg.check()?;
        eprintln!(
            "training {} (noise {noise}, alpha {alpha}) on {} images, {} epochs",
            a.arch,
            train.len(),
            c.epochs
        );
        let channels = train.shape[0];
        let init = initial_denoiser(&a.init, noise, &device)?;
        if let Some(d) = &init
            && (d.architecture() != a.arch || d.channels() != channels)
        {
            bail!(
                "--init: a {}-channel {} checkpoint cannot start a {channels}-channel {} run",
                d.channels(),
                d.architecture(),
                a.arch
            );
        }
        let progress = match a.arch {
            Architecture::Defed => train_denoiser(
                match init {
                    Some(Denoiser::Defed(m)) => *m,
                    _ => Defed::new(channels, a.edge, &device),
                },
                &clf,
                &train,
                &val,
                &cfg,
                &run,
                &device,
            )?,
            _ => train_denoiser(
                match init {
                    Some(Denoiser::Basenet(m)) => *m,
                    _ => BaseNet::new(channels, &device),
                },
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
