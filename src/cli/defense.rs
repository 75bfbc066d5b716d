use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use defed::attack::{AdvSet, load_adv, load_adv_npy, load_benign};
use defed::defense::{Defender, ThresholdRule, flag_rate};
use defed::eval::report::{
    EvalInput, compute_scores, evaluate, singles_and_pairs, to_csv, to_markdown,
};
use defed::model::{EdgeMethod, LoadOptions};

use super::classify::Format;

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// The protected classifier.
    #[arg(long)]
    classifier: PathBuf,
    /// Denoiser checkpoints (Defed or BaseNet, any mix).
    #[arg(long, num_args = 1.., required = true)]
    denoisers: Vec<PathBuf>,
    /// Weight of the class part of the adversarial score.
    #[arg(long, default_value_t = 1.0)]
    alpha: f32,
    /// Edge method of original Defed files whose names do not say.
    #[arg(long)]
    edge: Option<EdgeMethod>,
    /// Output bundle.
    #[arg(long, default_value = "defender.safetensors")]
    out: PathBuf,
}

pub fn bundle(a: BundleArgs) -> Result<()> {
    let device = defed::default_device();
    let opts = LoadOptions {
        edge: a.edge,
        noise: None,
    };
    let d = Defender::from_checkpoints(&a.classifier, &a.denoisers, a.alpha, &device, &opts)?;
    d.save(&a.out)?;
    println!(
        "bundle {} with {} denoisers ({}); calibrate it with `defed calibrate`",
        a.out.display(),
        d.denoisers.len(),
        d.denoisers
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// The bundle to calibrate (rewritten in place unless --out is given).
    #[arg(long)]
    bundle: PathBuf,
    /// Benign images (from `defed benign`).
    #[arg(long)]
    benign: PathBuf,
    /// Calibrate on the first N benign images (default: half of them, leaving the rest for
    /// evaluation).
    #[arg(long)]
    num: Option<usize>,
    /// Thresholds mean + k * std.
    #[arg(long, conflicts_with = "fpr")]
    k: Option<f64>,
    /// Thresholds flagging at most this share of the calibration images.
    #[arg(long)]
    fpr: Option<f64>,
    /// Images per batch.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
    /// Where to write the calibrated bundle.
    #[arg(long)]
    out: Option<PathBuf>,
    /// What the bundle does with flagged inputs: `correct` (the corrected label, as the
    /// original) or `reject` (no label). Kept from the bundle when not given.
    #[arg(long)]
    policy: Option<defed::defense::Policy>,
}

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    let device = defed::default_device();
    let mut d = Defender::load(&a.bundle, &device)?;
    let benign = load_benign(&a.benign)?;
    let n = a.num.unwrap_or(benign.len() / 2).min(benign.len());
    if n < 2 {
        bail!("calibration needs at least 2 benign images");
    }
    let set = benign.take(n);
    let s = d.scores_batched(&set.images, a.batch_size, &device)?;
    let rule = match (a.k, a.fpr) {
        (_, Some(p)) => ThresholdRule::Fpr(p),
        (k, None) => ThresholdRule::KStd(k.unwrap_or(2.0)),
    };
    d.calibrate(
        &s,
        rule,
        set.indices.clone(),
        a.benign.display().to_string(),
    )?;
    let t = d.thresholds.clone().unwrap_or_default();
    if let Some(p) = a.policy {
        d.policy = p;
    }
    let out = a.out.unwrap_or(a.bundle.clone());
    d.save(&out)?;
    for (dn, th) in d.denoisers.iter().zip(&t) {
        println!("{:<24} threshold {th:.6}", dn.name);
    }
    println!(
        "calibrated on {n} benign images ({:.1}% of them flagged); wrote {}",
        100.0 * flag_rate(&s, &t),
        out.display()
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DefendArgs {
    /// A calibrated bundle.
    #[arg(long)]
    bundle: PathBuf,
    /// Images: IDX, .npy, .npz (the adv, x or images array), PNG/JPEG files or folders.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Images per batch.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
}

pub fn defend(a: DefendArgs) -> Result<()> {
    let device = defed::default_device();
    let d = Defender::load(&a.bundle, &device)?;
    if d.thresholds.is_none() {
        bail!(
            "{} is not calibrated: run `defed calibrate` first",
            a.bundle.display()
        );
    }
    let [c, h, w] = d.input_shape();
    let inputs = defed::data::read_inputs(&a.inputs, c, [h, w])?;
    if inputs.shape[1..] != [c, h, w] {
        bail!(
            "the defender takes {c}x{h}x{w} images, the inputs are {}x{}x{}",
            inputs.shape[1],
            inputs.shape[2],
            inputs.shape[3]
        );
    }
    let s = d.scores_batched(&inputs.pixels, a.batch_size, &device)?;
    let names = d.names();
    let answers: Vec<defed::defense::Answer> = d
        .decide(&s)?
        .iter()
        .map(|v| v.answer(d.policy, &names))
        .collect();
    let v = &answers;
    let mut out = std::io::stdout().lock();
    let label = |a: &defed::defense::Answer| a.label.map(|l| l.to_string()).unwrap_or_default();
    match a.format {
        Format::Json => {
            let rows: Vec<_> = v
                .iter()
                .zip(&inputs.names)
                .map(|(v, n)| serde_json::json!({"image": n, "verdict": v}))
                .collect();
            let doc = serde_json::json!({"denoisers": names, "policy": d.policy, "thresholds": d.thresholds, "results": rows});
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Format::Csv => {
            write!(
                out,
                "image,label,rejected,adversarial,classifier_label,flagged_by"
            )?;
            for n in &names {
                write!(out, ",score {n}")?;
            }
            writeln!(out)?;
            for (v, n) in v.iter().zip(&inputs.names) {
                write!(
                    out,
                    "\"{n}\",{},{},{},{},{}",
                    label(v),
                    v.rejected,
                    v.adversarial,
                    v.classifier_label,
                    v.flagged_by.join(";")
                )?;
                for s in &v.scores {
                    write!(out, ",{s}")?;
                }
                writeln!(out)?;
            }
        }
        Format::Table => {
            for (v, n) in v.iter().zip(&inputs.names) {
                let given = match v.label {
                    Some(l) => format!("label {l}"),
                    None => "REJECTED".to_string(),
                };
                writeln!(
                    out,
                    "{n:<40} {given}  {}",
                    if v.adversarial {
                        format!(
                            "ADVERSARIAL (flagged by {}; classifier said {})",
                            v.flagged_by.join(", "),
                            v.classifier_label
                        )
                    } else {
                        "clean".to_string()
                    }
                )?;
            }
            let flagged = v.iter().filter(|v| v.adversarial).count();
            writeln!(
                out,
                "{flagged} of {} images flagged as adversarial",
                v.len()
            )?;
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// The classifier (with --denoisers), or use --bundle.
    #[arg(long, required_unless_present = "bundle")]
    classifier: Option<PathBuf>,
    /// Denoiser checkpoints.
    #[arg(long, num_args = 1.., required_unless_present = "bundle")]
    denoisers: Vec<PathBuf>,
    /// A bundle whose denoisers to evaluate.
    #[arg(long, conflicts_with_all = ["classifier", "denoisers"])]
    bundle: Option<PathBuf>,
    /// Edge method of original Defed files whose names do not say.
    #[arg(long)]
    edge: Option<EdgeMethod>,
    /// Score weight alpha.
    #[arg(long, default_value_t = 1.0)]
    alpha: f32,
    /// Denoiser sets by noise level (or name), e.g. "40" "0,80" "20,60,100" (default: all).
    #[arg(long, num_args = 1..)]
    sets: Vec<String>,
    /// Every single noise level and every pair (the original's grid).
    #[arg(long)]
    pairwise: bool,
    /// k of the mean + k std rule.
    #[arg(long, num_args = 1.., default_values_t = vec![2.0])]
    k: Vec<f64>,
    /// False-positive-rate rules as well.
    #[arg(long, num_args = 1..)]
    fpr: Vec<f64>,
    /// Benign images (from `defed benign`).
    #[arg(long)]
    benign: PathBuf,
    /// The first N benign images calibrate, the rest evaluate (default: half).
    #[arg(long)]
    calibration: Option<usize>,
    /// Evaluate on the calibration images too (the original's protocol).
    #[arg(long)]
    allow_overlap: bool,
    /// Adversarial sets: .npz files from `defed attack`, folders of them, or folders of
    /// `<name>_adv.npy` / `_benign.npy` / `_labels.npy` triples.
    #[arg(long, num_args = 1.., required_unless_present = "adaptive")]
    adv: Vec<PathBuf>,
    /// Run the adaptive white-box attack on the (calibrated) bundle instead: it knows the
    /// classifier, the denoisers, alpha, the rule and the thresholds. Writes adaptive.csv,
    /// adaptive.json, adaptive.md and adaptive-images.csv (one line per image and budget).
    #[arg(long, requires = "bundle", conflicts_with = "adv")]
    adaptive: bool,
    /// Adaptive: budgets as norm:eps (default linf:0.1 linf:0.2 linf:0.3 l2:1 l2:2 l2:3).
    #[arg(long, num_args = 1..)]
    budgets: Vec<String>,
    /// Adaptive: benign images attacked (the bundle's calibration images are skipped).
    #[arg(long, default_value_t = 100)]
    num: usize,
    /// Adaptive: APGD iterations per run.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Adaptive: APGD restarts per run.
    #[arg(long, default_value_t = 1)]
    restarts: usize,
    /// Adaptive: penalty weights tried in turn.
    #[arg(long, num_args = 1.., default_values_t = vec![1.0, 10.0, 100.0])]
    lambdas: Vec<f32>,
    /// Adaptive: also run the evade goal targeted at each of the N wrong classes the
    /// classifier ranks highest on the clean image (0: untargeted only).
    #[arg(long, default_value_t = 0)]
    targets: usize,
    /// Adaptive: identity gradient through the clamp of the denoised images (BPDA).
    #[arg(long)]
    straight_through: bool,
    /// Adaptive: start only from the clean images (by default the runs are made again from
    /// the transfer examples, PGD on the bare classifier, on the images the first runs leave;
    /// the protocol of the figures defed recorded before 2026-12-04).
    #[arg(long)]
    no_transfer_start: bool,
    /// Adaptive: seed of the random restarts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
    /// Output folder (results.csv, results.json, report.md).
    #[arg(long, default_value = "report")]
    out: PathBuf,
}

/// Finds adversarial sets in files and folders.
pub fn collect_adv(paths: &[PathBuf]) -> Result<Vec<(String, AdvSet)>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in &entries {
                let name = e
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                if name.ends_with(".npz") {
                    out.push((
                        name.trim_end_matches(".npz").replace('_', " "),
                        load_adv(e)?,
                    ));
                } else if let Some(prefix) = name.strip_suffix("_adv.npy") {
                    out.push((prefix.to_string(), load_adv_npy(p, prefix)?));
                }
            }
        } else {
            let name = p
                .file_stem()
                .map(|n| n.to_string_lossy().replace('_', " "))
                .unwrap_or_default();
            out.push((name, load_adv(p)?));
        }
    }
    let before = out.len();
    out.retain(|(name, set)| {
        let keep = !set.src_idx.is_empty();
        if !keep {
            tracing::warn!(set = %name, "skipping an adversarial set without examples");
        }
        keep
    });
    if out.is_empty() {
        bail!(
            "no adversarial examples found in {:?} ({before} sets, all empty or absent)",
            paths
        );
    }
    Ok(out)
}

/// Resolves set specs ("20,60,100") to denoiser indices.
pub fn resolve_sets(d: &Defender, specs: &[String], pairwise: bool) -> Result<Vec<Vec<usize>>> {
    let find = |tok: &str| -> Result<usize> {
        let tok = tok.trim();
        if let Ok(n) = tok.parse::<f32>() {
            let hits: Vec<usize> = (0..d.denoisers.len())
                .filter(|&i| d.denoisers[i].meta.noise == Some(n))
                .collect();
            match hits.as_slice() {
                [i] => return Ok(*i),
                [] => {}
                _ => bail!(
                    "noise level {tok} matches several denoisers; name one of {:?}",
                    d.denoisers.iter().map(|x| &x.name).collect::<Vec<_>>()
                ),
            }
        }
        (0..d.denoisers.len())
            .find(|&i| d.denoisers[i].name == tok)
            .with_context(|| format!("no denoiser with noise level or name {tok:?}"))
    };
    let mut sets: Vec<Vec<usize>> = specs
        .iter()
        .map(|s| s.split(',').map(find).collect::<Result<Vec<_>>>())
        .collect::<Result<_>>()?;
    if pairwise {
        sets.extend(singles_and_pairs(d.denoisers.len()));
    }
    if sets.is_empty() {
        sets.push((0..d.denoisers.len()).collect());
    }
    Ok(sets)
}

pub fn evaluate_cmd(a: EvaluateArgs) -> Result<()> {
    let device = defed::default_device();
    let d = match &a.bundle {
        Some(b) => Defender::load(b, &device)?,
        None => Defender::from_checkpoints(
            a.classifier.as_deref().expect("clap requires it"),
            &a.denoisers,
            a.alpha,
            &device,
            &LoadOptions {
                edge: a.edge,
                noise: None,
            },
        )?,
    };
    let benign = load_benign(&a.benign)?;
    if a.adaptive {
        return adaptive_cmd(&a, &d, &benign, &device);
    }
    let adv = collect_adv(&a.adv)?;
    let sets = resolve_sets(&d, &a.sets, a.pairwise)?;
    let mut rules: Vec<ThresholdRule> = a.k.iter().map(|&k| ThresholdRule::KStd(k)).collect();
    rules.extend(a.fpr.iter().map(|&p| ThresholdRule::Fpr(p)));
    let input = EvalInput {
        defender: &d,
        benign: &benign,
        calibration: a.calibration.unwrap_or(benign.len() / 2),
        allow_overlap: a.allow_overlap,
        adv: &adv,
        sets: &sets,
        rules: &rules,
        batch_size: a.batch_size,
    };
    eprintln!(
        "scoring {} benign and {} adversarial images under {} denoisers",
        benign.len(),
        adv.iter().map(|(_, s)| s.benign.len()).sum::<usize>(),
        d.denoisers.len()
    );
    let scores = compute_scores(&input, &device)?;
    let rows = evaluate(&input, &scores)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut all = d.clone();
    all.thresholds = None;
    let figures = defed::eval::report::figures(
        &defed::eval::report::FigureInput {
            defender: &all,
            scores: &scores,
            adv_sets: &adv,
            evaluation: &rows,
            calibration: input.calibration,
        },
        &device,
    )?;
    defed::eval::charts::write_figures(&a.out, &figures)?;
    let spread = defed::eval::report::calibration_spread(
        &scores.benign.select_images(0..input.calibration),
        &d.names(),
    );
    write_results(
        &a.out,
        &rows,
        &defed::eval::report::calibration_section(&spread),
    )?;
    defed::eval::html::write_report(&a.out)?;
    print!("{}", to_markdown(&rows));
    println!("results in {}", a.out.display());
    Ok(())
}

/// Writes results.csv, results.json and report.md (the grid, then `after_table`) into `out`
/// (figures are written separately).
pub fn write_results(
    out: &Path,
    rows: &[defed::eval::report::EvalRow],
    after_table: &str,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    defed::util::write_atomic(out.join("results.csv"), to_csv(rows).as_bytes())?;
    defed::util::write_atomic(out.join("results.json"), &serde_json::to_vec_pretty(rows)?)?;
    let figures = defed::eval::charts::read_figures(out)?;
    let md = format!(
        "# defed evaluation\n\nThresholds are fitted on the calibration images and measured on held-out benign images; each cell for an attack reads detection rate / accuracy of the final label / ROC-AUC of the max normalised score.\n\n{}\n{}{}",
        to_markdown(rows),
        after_table,
        if figures.is_empty() {
            String::new()
        } else {
            format!(
                "\n## Figures\n\n{}",
                defed::eval::charts::markdown(&figures)
            )
        }
    );
    defed::util::write_atomic(out.join("report.md"), md.as_bytes())?;
    Ok(())
}

fn parse_budget(s: &str) -> Result<(defed::attack::Norm, f32)> {
    let (norm, eps) = s
        .split_once(':')
        .with_context(|| format!("budget `{s}`: write norm:eps, e.g. linf:0.3 or l2:2"))?;
    let norm: defed::attack::Norm = norm.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let eps: f32 = super::attack::parse_eps(eps)?;
    Ok((norm, eps))
}

fn adaptive_cmd(
    a: &EvaluateArgs,
    d: &Defender,
    benign: &defed::data::ImageSet,
    device: &defed::Device,
) -> Result<()> {
    use defed::attack::AdaptiveConfig;
    use defed::eval::adaptive::{
        adaptive_csv, adaptive_markdown, default_budgets, evaluate_adaptive,
    };
    if d.thresholds.is_none() {
        bail!("the bundle is not calibrated: run `defed calibrate` first");
    }
    let budgets = if a.budgets.is_empty() {
        default_budgets()
    } else {
        a.budgets
            .iter()
            .map(|s| parse_budget(s))
            .collect::<Result<_>>()?
    };
    // Never attack the images the thresholds were fitted on.
    let set = d.held_out(benign, a.num)?;
    let cfg = AdaptiveConfig {
        iterations: a.iterations,
        restarts: a.restarts,
        lambdas: a.lambdas.clone(),
        targets: a.targets,
        straight_through: a.straight_through,
        from_transfer: !a.no_transfer_start,
        batch_size: a.batch_size.clamp(1, 64),
        seed: a.seed,
        ..AdaptiveConfig::new(defed::attack::Norm::Linf, 0.1)
    };
    eprintln!(
        "adaptive attack on {} ({} denoisers, policy {}) with {} held-out benign images, {} budgets",
        a.bundle
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        d.denoisers.len(),
        d.policy,
        set.len(),
        budgets.len()
    );
    let rows = evaluate_adaptive(d, &set, &budgets, &cfg, device, |r| {
        let x = &r.adaptive;
        let (worst_reject, worst_correct) = r.robust_accuracy();
        eprintln!(
            "{} eps {}: adaptive evade {:.1}% flagged {:.1}% wrong {:.1}% | transfer evade {:.1}% | worst case robust {:.1}% (reject) {:.1}% (correct) | {:.0} s",
            x.norm.name(),
            x.eps,
            100.0 * x.evade_success,
            100.0 * x.flagged,
            100.0 * x.wrong_label,
            100.0 * r.transfer_evade_success,
            100.0 * worst_reject,
            100.0 * worst_correct,
            x.seconds
        );
    })?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    defed::util::write_atomic(a.out.join("adaptive.csv"), adaptive_csv(&rows).as_bytes())?;
    defed::util::write_atomic(
        a.out.join("adaptive-images.csv"),
        defed::eval::adaptive::adaptive_images_csv(&rows, &set).as_bytes(),
    )?;
    defed::util::write_atomic(
        a.out.join("adaptive.json"),
        &serde_json::to_vec_pretty(&rows)?,
    )?;
    let title = a
        .bundle
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let figures: Vec<_> = defed::eval::figures::adaptive_figure(&rows)
        .into_iter()
        .collect();
    defed::eval::charts::write_figures(&a.out, &figures)?;
    let mut md = adaptive_markdown(&rows, &title, &cfg);
    if !figures.is_empty() {
        md += "\n## Figures\n\n";
        md += &defed::eval::charts::markdown(&figures);
    }
    defed::util::write_atomic(a.out.join("adaptive.md"), md.as_bytes())?;
    defed::eval::html::write_report(&a.out)?;
    println!("{md}");
    Ok(())
}
