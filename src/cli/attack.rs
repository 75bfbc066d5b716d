use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use defed::attack::{
    Attack, AttackKind, AttackModel, AttackSettings, AttackStats, Norm, Target, benign_set,
    build_attack, load_benign, paper_grid, run_attack, save_adv, save_benign,
};
use defed::data::{load_spec, read_inputs, read_labels};
use defed::model::load_classifier;
use defed::util::row;

#[derive(Debug, clap::Args)]
pub struct BenignArgs {
    /// Classifier checkpoint.
    #[arg(long)]
    classifier: PathBuf,
    /// Test images: a named split (default mnist:test) ...
    #[arg(long, default_value = "mnist:test")]
    dataset: String,
    /// ... or image files (IDX, .npy, PNG/JPEG) with --labels.
    #[arg(long, num_args = 1.., conflicts_with = "dataset")]
    images: Vec<PathBuf>,
    /// Labels of --images (IDX or .npy).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// How many correctly classified images to keep.
    #[arg(long, default_value_t = 1000)]
    num: usize,
    /// Output .npz (images, labels, test_idx).
    #[arg(long, default_value = "benign.npz")]
    out: PathBuf,
    /// Start at this image of the split (e.g. calibration images from the end of the test
    /// split, away from the images evaluated).
    #[arg(long, default_value_t = 0)]
    from: usize,
    /// Keep the first N images whether or not the classifier gets them right (for robust
    /// accuracy over the first N test images: `attack --suite strong` counts clean errors
    /// as broken).
    #[arg(long)]
    include_misclassified: bool,
}

pub fn benign(a: BenignArgs) -> Result<()> {
    let device = defed::default_device();
    let (clf, _) = load_classifier(&a.classifier, &device)?;
    let [c, h, w] = clf.input_shape();
    let set = if a.images.is_empty() {
        load_spec(&a.dataset, 0.1, 0)?
    } else {
        let labels = read_labels(a.labels.as_ref().context("--images needs --labels")?)?;
        read_inputs(&a.images, c, [h, w])?.into_set(Some(labels))?
    };
    if a.from >= set.len() {
        bail!("--from {}: the data has only {} images", a.from, set.len());
    }
    let set = set.select(&(a.from..set.len()).collect::<Vec<_>>());
    set.check_labels(clf.num_classes())?;
    let model = AttackModel::new(&clf, &device);
    if a.include_misclassified {
        let first = set.take(a.num);
        save_benign(&first, &a.out)?;
        println!(
            "kept images {}-{} ({}, clean errors included) in {}",
            a.from,
            a.from + first.len().saturating_sub(1),
            first.len(),
            a.out.display()
        );
        return Ok(());
    }
    let benign = benign_set(&model, &set, a.num, 512);
    if benign.len() < a.num {
        tracing::warn!(
            kept = benign.len(),
            wanted = a.num,
            "fewer correctly classified images than asked for"
        );
    }
    save_benign(&benign, &a.out)?;
    // How far into the data (from `--from`) the kept images reach.
    let tested = benign
        .indices
        .last()
        .and_then(|last| set.indices.iter().position(|i| i == last))
        .map_or(0, |p| p + 1);
    println!(
        "kept {} correctly classified images (of {} tested from image {}) in {}",
        benign.len(),
        tested,
        a.from,
        a.out.display()
    );
    Ok(())
}

/// A named grid of attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// The original paper's whole grid, plus FGSM and PGD-Linf 0.3.
    Paper,
    /// AutoAttack-style robust accuracy: APGD-CE, targeted APGD-DLR (9 classes), Square with
    /// 5,000 queries (Linf), each on what the previous left; per --eps (default Linf 0.1 0.2
    /// 0.3, L2 1 2 3).
    Strong,
}

#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    /// Classifier checkpoint (the attacked model).
    #[arg(long)]
    classifier: PathBuf,
    /// Benign set from `defed benign`.
    #[arg(long)]
    benign: PathBuf,
    /// The attack (or use --suite): fgsm, pgd, deepfool, jsma, cw-linf, cw-l2, hsj, square.
    #[arg(long, required_unless_present = "suite")]
    attack: Option<AttackKind>,
    /// Run a whole grid of attacks instead.
    #[arg(long, value_enum, conflicts_with = "attack")]
    suite: Option<Suite>,
    /// Norm for FGSM, PGD and HopSkipJump (l1, l2, linf).
    #[arg(long, default_value = "linf")]
    norm: Norm,
    /// Budgets to sweep (numbers or fractions like 64/256); defaults per attack.
    #[arg(long, num_args = 1..)]
    eps: Vec<String>,
    /// PGD step size (default: 0.01 Linf, 0.1 L2, 4 L1).
    #[arg(long)]
    step: Option<f32>,
    /// Iterations (default per attack: PGD 40 Linf / 100 L1-L2, CW-Linf 200, HSJ 40, Square 100,
    /// DeepFool 100; with `--suite strong`: APGD's, default 100).
    #[arg(long)]
    iterations: Option<usize>,
    /// PGD: start from a random point in the ball.
    #[arg(long)]
    random_init: bool,
    /// PGD (and APGD with `--suite strong`): independent restarts.
    #[arg(long, default_value_t = 1)]
    restarts: usize,
    /// JSMA theta.
    #[arg(long, default_value_t = 0.1)]
    theta: f32,
    /// JSMA gamma.
    #[arg(long, default_value_t = 1.0)]
    gamma: f32,
    /// Targeted mode (FGSM, PGD, JSMA): untargeted, random, next, or a class number. JSMA is
    /// always targeted; untargeted JSMA picks random targets internally.
    #[arg(long, default_value = "untargeted")]
    target: Target,
    /// Attack only the first N benign images.
    #[arg(long)]
    num: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder: one .npz + .json per attack and budget, and summary.csv / summary.json
    /// (with --suite strong: strong.csv / strong.json, strong-images.csv (one line per image and
    /// budget) and the .npz sets of the broken images).
    #[arg(long, default_value = "adv")]
    out: PathBuf,
    /// Run only shard i of n of the (attack, budget) grid (or of the strong suite's budgets),
    /// e.g. 0/4, for a job array; `defed merge` joins the shards' folders.
    #[arg(long, default_value = "0/1")]
    shard: String,
}

pub(super) fn parse_eps(s: &str) -> Result<f32> {
    let v = match s.split_once('/') {
        Some((a, b)) => a.trim().parse::<f32>()? / b.trim().parse::<f32>()?,
        None => s.trim().parse::<f32>()?,
    };
    if !(v.is_finite() && v > 0.0) {
        bail!("eps must be a positive number, got {s}");
    }
    Ok(v)
}

fn settings(a: &AttackArgs) -> AttackSettings {
    AttackSettings {
        step: a.step,
        iterations: a.iterations,
        random_init: a.random_init,
        restarts: a.restarts,
        theta: a.theta,
        gamma: a.gamma,
    }
}

pub fn attack(a: AttackArgs) -> Result<()> {
    let device = defed::default_device();
    let (clf, _) = load_classifier(&a.classifier, &device)?;
    let mut set = load_benign(&a.benign)?;
    if let Some(n) = a.num {
        set = set.take(n);
    }
    if set.is_empty() {
        bail!("{} holds no images", a.benign.display());
    }
    let shard = defed::eval::merge::parse_shard(&a.shard)?;
    let model = AttackModel::new(&clf, &device);
    if a.suite == Some(Suite::Strong) {
        return strong(&a, &model, &set, shard);
    }
    let attacks: Vec<Box<dyn Attack>> = match (a.suite, a.attack) {
        (Some(Suite::Paper), _) => paper_grid(&settings(&a))?,
        (None, Some(kind)) => {
            if a.eps.is_empty() {
                vec![build_attack(kind, a.norm, None, &settings(&a))?]
            } else {
                a.eps
                    .iter()
                    .map(|s| {
                        Ok(build_attack(
                            kind,
                            a.norm,
                            Some(parse_eps(s)?),
                            &settings(&a),
                        )?)
                    })
                    .collect::<Result<_>>()?
            }
        }
        (Some(Suite::Strong), _) => unreachable!("handled above"),
        (None, None) => bail!("give --attack or --suite"),
    };
    let attacks = defed::eval::merge::take_shard(attacks, shard);
    if attacks.is_empty() {
        bail!(
            "--shard {}: this shard has no attack (the grid has fewer jobs than shards)",
            a.shard
        );
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut all: Vec<AttackStats> = Vec::new();
    for attack in &attacks {
        let result = run_attack(
            attack.as_ref(),
            &model,
            &set,
            a.batch_size,
            a.seed,
            progress,
            a.target,
        )?;
        let stats = result.stats.clone().expect("run_attack sets stats");
        let path = a
            .out
            .join(format!("{}.npz", defed::attack::file_stem(&stats.attack)));
        save_adv(&result, &path)?;
        println!(
            "{:<24} success {:>6.2}% ({}/{})  {:.4} s/img  L0 {:.1}  L1 {:.3}  L2 {:.3}  Linf {:.3}  -> {}",
            stats.attack,
            100.0 * stats.success_rate,
            stats.succeeded,
            stats.attempted,
            stats.seconds_per_image,
            stats.mean_l0,
            stats.mean_l1,
            stats.mean_l2,
            stats.mean_linf,
            path.display()
        );
        all.push(stats);
    }
    defed::util::write_atomic(
        a.out.join("summary.csv"),
        defed::attack::stats_csv(&all).as_bytes(),
    )?;
    defed::util::write_atomic(
        a.out.join("summary.json"),
        &serde_json::to_vec_pretty(&all)?,
    )?;
    if let Some(f) = defed::eval::figures::sweep_figure(&all) {
        defed::eval::charts::write_figures(&a.out, std::slice::from_ref(&f))?;
        println!(
            "figure: {}",
            a.out.join(format!("{}.png", f.name)).display()
        );
    }
    Ok(())
}

fn strong(
    a: &AttackArgs,
    model: &AttackModel,
    set: &defed::data::ImageSet,
    shard: (usize, usize),
) -> Result<()> {
    use defed::attack::{strong_attacks, strong_protocol};
    let eps: Vec<f32> = if a.eps.is_empty() {
        match a.norm {
            Norm::Linf => vec![0.1, 0.2, 0.3],
            Norm::L2 => vec![1.0, 2.0, 3.0],
            other => bail!("the strong suite runs in Linf or L2, not {}", other.name()),
        }
    } else {
        a.eps.iter().map(|s| parse_eps(s)).collect::<Result<_>>()?
    };
    let eps = defed::eval::merge::take_shard(eps, shard);
    if eps.is_empty() {
        bail!("--shard {}: this shard has no budget", a.shard);
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut reports = Vec::new();
    for e in eps {
        let settings = defed::attack::StrongSettings {
            iterations: a.iterations.unwrap_or(100),
            restarts: a.restarts,
            ..Default::default()
        };
        let attacks = strong_attacks(a.norm, e, settings);
        let r = strong_protocol(model, set, &attacks, a.batch_size, a.seed)?;
        println!(
            "{} eps {e}: clean {:.2}%, robust {:.2}% ({})",
            a.norm.name(),
            100.0 * r.clean_accuracy,
            100.0 * r.robust_accuracy,
            r.stages
                .iter()
                .map(|s| format!("{} -> {:.2}%", s.attack, 100.0 * s.robust_accuracy))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // The worst-case examples that broke the classifier, as an ordinary adversarial set.
        let idx: Vec<usize> = (0..set.len()).filter(|&i| r.broken[i]).collect();
        let per = set.image_len();
        let adv = defed::attack::AdvSet {
            benign: set.select(&idx),
            adv: idx
                .iter()
                .flat_map(|&i| row(&r.adv, i, per).to_vec())
                .collect(),
            adv_pred: model.predict(
                &idx.iter()
                    .flat_map(|&i| row(&r.adv, i, per).to_vec())
                    .collect::<Vec<_>>(),
            ),
            src_idx: idx.clone(),
            targets: vec![],
            stats: None,
        };
        if !idx.is_empty() {
            save_adv(
                &adv,
                a.out.join(format!("strong-{}-eps{}.npz", a.norm.name(), e)),
            )?;
        }
        reports.push(r);
    }
    defed::util::write_atomic(
        a.out.join("strong.csv"),
        defed::attack::strong_csv(&reports).as_bytes(),
    )?;
    defed::util::write_atomic(
        a.out.join("strong-images.csv"),
        defed::attack::strong_images_csv(&reports, set).as_bytes(),
    )?;
    defed::util::write_atomic(
        a.out.join("strong.json"),
        &serde_json::to_vec_pretty(&reports)?,
    )?;
    if let Some(f) = defed::eval::figures::strong_figure(&reports) {
        defed::eval::charts::write_figures(&a.out, std::slice::from_ref(&f))?;
        println!(
            "figure: {}",
            a.out.join(format!("{}.png", f.name)).display()
        );
    }
    Ok(())
}
