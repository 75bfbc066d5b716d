//! The whole Defed pipeline, stages 1 to 5: benign set, attacks, denoisers, defender,
//! evaluation, and a report folder. By default on the embedded MNIST digits with the embedded
//! models; with a data set (`svhn`, `cifar10`, `mnist`, ..., or an `.npz` / SVHN `.mat` file)
//! on its test split, with models given or trained.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::attack::{
    AdaptiveConfig, AdvSet, Attack, AttackModel, AttackStats, Norm, Target, benign_set, run_attack,
    save_adv, save_benign,
};
use crate::backend::{Device, autodiff_device};
use crate::data::{Augment, ImageSet, embedded_mnist};
use crate::defense::{Defender, DefenderDenoiser, Policy, ThresholdRule};
use crate::error::{Error, Result};
use crate::eval::report::{
    CalibrationSpread, EvalInput, EvalRow, calibration_section, calibration_spread, compute_scores,
    evaluate, singles_and_pairs, to_csv, to_markdown,
};
use crate::model::{
    Classifier, Defed, EdgeMethod, LeNet, LoadOptions, embedded, load_classifier, load_denoiser,
};
use crate::train::{
    ClassifierTrainConfig, DenoiserTrainConfig, RunOptions, train_classifier, train_denoiser,
};
use crate::util::write_atomic;

/// What the pipeline runs on and how much.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineConfig {
    /// Report folder.
    pub out: PathBuf,
    /// The data: `None` for the embedded MNIST digits (held-out 10% evaluated); a named data
    /// set (`svhn`, `cifar10`, `mnist`, `fashion-mnist`: its test split is evaluated, its
    /// training split trains with `train`), or an `.npz` (`x`, `y`) or SVHN `.mat` file
    /// (evaluated whole).
    #[serde(default)]
    pub dataset: Option<String>,
    /// Classifier checkpoint (default: the embedded LeNet).
    pub classifier: Option<PathBuf>,
    /// Denoiser checkpoints (default: the embedded Defeds).
    pub denoisers: Vec<PathBuf>,
    /// Retrain the classifier and the denoisers from scratch instead.
    pub train: bool,
    /// Classifier epochs when training.
    pub classifier_epochs: usize,
    /// Denoiser epochs when training.
    pub denoiser_epochs: usize,
    /// Noise levels of the denoisers when training.
    pub noise: Vec<f32>,
    /// Benign images kept (from the held-out embedded digits).
    pub benign: usize,
    /// Of which the first ones calibrate the thresholds.
    pub calibration: usize,
    /// Held-out benign images attacked.
    pub attacked: usize,
    /// Held-out images the adaptive (white-box) attack runs on, at Linf 0.3 and L2 2 (0: skip).
    pub adaptive: usize,
    /// Also run the robust defender (an adversarially trained classifier behind the
    /// denoisers) beside the paper's, in `<out>/robust/`.
    pub robust: bool,
    /// Its classifier (default: the embedded adversarially trained Madry CNN).
    pub robust_classifier: Option<PathBuf>,
    /// Its denoisers (default: the embedded Defed denoisers fine-tuned on adversarial
    /// examples against the robust classifier).
    pub robust_denoisers: Vec<PathBuf>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Progress bars.
    pub progress: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            out: PathBuf::from("report"),
            dataset: None,
            classifier: None,
            denoisers: vec![],
            train: false,
            classifier_epochs: 100,
            denoiser_epochs: 3,
            noise: vec![20.0, 60.0, 100.0],
            benign: 600,
            calibration: 300,
            attacked: 100,
            adaptive: 10,
            robust: true,
            robust_classifier: None,
            robust_denoisers: vec![],
            seed: 0,
            progress: false,
        }
    }
}

/// One defender's figures: its classifier, benign set, attacks, evaluation grid and adaptive run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DefenceReport {
    /// Where the classifier came from.
    #[serde(default)]
    pub classifier_source: String,
    /// Classifier accuracy on the held-out embedded digits.
    pub classifier_accuracy: f64,
    /// Benign images kept, and how many calibrate.
    pub benign: usize,
    /// Calibration images.
    pub calibration: usize,
    /// One entry per attack.
    pub attacks: Vec<AttackStats>,
    /// The evaluation grid.
    pub evaluation: Vec<EvalRow>,
    /// The headline row: all denoisers, k = 2.
    pub headline: Option<EvalRow>,
    /// The adaptive attack on the calibrated bundle.
    #[serde(default)]
    pub adaptive: Vec<crate::eval::adaptive::AdaptiveRow>,
    /// How each denoiser's scores spread over the calibration images.
    #[serde(default)]
    pub calibration_spread: Vec<crate::eval::report::CalibrationSpread>,
}

/// The pipeline's figures: the paper's defender, and the robust one beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineReport {
    /// The paper's defender (LeNet + Defed denoisers).
    #[serde(flatten)]
    pub paper: DefenceReport,
    /// The robust defender (adversarially trained classifier + Defed denoisers), in `robust/`.
    #[serde(default)]
    pub robust: Option<DefenceReport>,
    /// Where the report is.
    pub out: PathBuf,
}

/// The pipeline's small adaptive run: 20 iterations, lambda in {1, 10} (budgets set per run).
fn adaptive_settings(seed: u64) -> AdaptiveConfig {
    AdaptiveConfig {
        iterations: 20,
        lambdas: vec![1.0, 10.0],
        seed,
        ..AdaptiveConfig::new(Norm::Linf, 0.3)
    }
}

fn progress_line(msg: &str) {
    tracing::info!("{msg}");
    eprintln!("[defed pipeline] {msg}");
}

/// Gradient attacks only, for the robust defender: query attacks (HopSkipJump, Square) and
/// JSMA / Carlini-Wagner cost far more against the larger network, and the white-box adaptive
/// attack is the test that matters for it.
fn robust_attack_suite(colour: bool) -> Vec<Box<dyn Attack>> {
    crate::attack::pipeline_suite_for(colour)
        .into_iter()
        .filter(|a| {
            a.name().starts_with("FGSM")
                || a.name().starts_with("PGD")
                || a.name().starts_with("DeepFool")
        })
        .collect()
}

/// The data a run works on.
struct Data {
    /// Training images (for `--train`).
    train: ImageSet,
    /// The images evaluated (benign set, calibration, attacks).
    eval: ImageSet,
    /// How the report describes them.
    description: String,
    /// Natural colour images (attack budgets of SVHN / CIFAR-10).
    colour: bool,
}

fn load_data(cfg: &PipelineConfig) -> Result<Data> {
    let Some(spec) = &cfg.dataset else {
        let (train, eval) = embedded_mnist().split(0.1, cfg.seed);
        return Ok(Data {
            train,
            eval,
            description: format!(
                "the 10,000 embedded MNIST training digits; the classifier's held-out 10% split supplies the benign images (seed {})",
                cfg.seed
            ),
            colour: false,
        });
    };
    let file = Path::new(spec);
    let (train, eval, description) = if spec.ends_with(".npz") || spec.ends_with(".mat") {
        if cfg.train {
            return Err(Error::Invalid(format!(
                "--train needs a named data set with a training split, not the file {spec}"
            )));
        }
        let eval = if spec.ends_with(".npz") {
            crate::data::read_npz_set(file)?
        } else {
            crate::data::read_svhn(file)?
        };
        let d = format!("the {} images of `{spec}`", eval.len());
        (ImageSet::new(vec![], vec![], eval.shape)?, eval, d)
    } else {
        let name = spec.split(':').next().unwrap_or(spec);
        let eval = crate::data::load_spec(&format!("{name}:test"), 0.1, cfg.seed)?;
        let train = if cfg.train {
            crate::data::load_spec(&format!("{name}:train"), 0.1, cfg.seed)?
        } else {
            ImageSet::new(vec![], vec![], eval.shape)?
        };
        let d = format!(
            "the {name} test split ({} images) supplies the benign images{}",
            eval.len(),
            if cfg.train {
                format!(
                    "; the models were trained on its training split ({} images)",
                    train.len()
                )
            } else {
                String::new()
            }
        );
        (train, eval, d)
    };
    if !cfg.train
        && eval.shape != [1, 28, 28]
        && (cfg.classifier.is_none() || cfg.denoisers.is_empty())
    {
        return Err(Error::Invalid(format!(
            "the embedded models are for 1x28x28 MNIST digits and {spec} holds {}x{}x{} images: give --classifier and --denoisers (e.g. the authors' svhn-classifier.pth and svhn-laplacian-alpha=1-noise=40.pth) or --train",
            eval.shape[0], eval.shape[1], eval.shape[2]
        )));
    }
    let colour = eval.shape[0] == 3;
    Ok(Data {
        train,
        eval,
        description,
        colour,
    })
}

/// Runs stages 1-5 for the paper's defender and, unless switched off, for the robust one, and
/// writes the report folder.
pub fn run(cfg: &PipelineConfig) -> Result<PipelineReport> {
    let device = crate::default_device();
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let data = load_data(cfg)?;
    let (classifier, classifier_source) = classifier_stage(cfg, &data.train, &device)?;
    if classifier.input_shape() != data.eval.shape {
        return Err(Error::Shape(format!(
            "the classifier ({classifier_source}) takes {:?} images, the data holds {:?}",
            classifier.input_shape(),
            data.eval.shape
        )));
    }
    let title = if data.colour {
        "the classifier + Defed denoisers (the paper's defender)"
    } else {
        "LeNet-5 + Defed denoisers (the paper's defender)"
    };
    let paper = defence_stages(
        cfg,
        &data,
        &cfg.out,
        "the paper's defender",
        classifier,
        classifier_source,
        crate::attack::pipeline_suite_for(data.colour),
        Policy::Correct,
        |classifier| paper_denoisers(cfg, classifier, &data.train),
    )?;
    write_report(&cfg.out, &paper, cfg, &data, title)?;
    let robust_fits = data.eval.shape == [1, 28, 28] || cfg.robust_classifier.is_some();
    if cfg.robust && !robust_fits {
        progress_line(
            "the robust defender is skipped: its embedded models are for MNIST (give --robust-classifier and --robust-denoisers for this data)",
        );
    }
    let robust = match cfg.robust && robust_fits {
        true => Some(robust_defence(cfg, &data, &device)?),
        false => None,
    };
    finish(cfg, paper, robust)
}

/// The paper's classifier: trained here with `--train` (the shipped LeNet's recipe), the given
/// file, or the embedded LeNet; with where it came from.
fn classifier_stage(
    cfg: &PipelineConfig,
    train: &ImageSet,
    device: &Device,
) -> Result<(Classifier, String)> {
    if cfg.train {
        let mnist = train.shape == [1, 28, 28];
        let (what, name) = if mnist {
            ("LeNet-5", "lenet-mnist")
        } else {
            ("the SVHN VGG classifier", "classifier")
        };
        progress_line(&format!(
            "training {what} for {} epochs on {} images",
            cfg.classifier_epochs,
            train.len()
        ));
        let ad = autodiff_device();
        ad.seed(cfg.seed);
        let epochs = cfg.classifier_epochs;
        let run = RunOptions {
            out_dir: cfg.out.join("models"),
            name: name.into(),
            epochs,
            batch_size: 64,
            lr: 1e-3,
            milestones: vec![epochs * 7 / 10, epochs * 9 / 10],
            seed: cfg.seed,
            resume: false,
            progress: cfg.progress,
            source: "defed pipeline --train".into(),
            dataset: cfg
                .dataset
                .clone()
                .unwrap_or_else(|| "mnist-embedded".into()),
        };
        let (tr, va) = train.split(0.1, cfg.seed + 1);
        if mnist {
            // The shipped LeNet's recipe.
            let recipe = ClassifierTrainConfig {
                augment: Augment::lenet_mnist(),
                ..Default::default()
            };
            train_classifier(LeNet::new(&ad), &tr, &va, &recipe, &run, &ad)?;
        } else {
            let net = crate::model::SvhnNet::new(train.shape[0], &ad);
            train_classifier(net, &tr, &va, &Default::default(), &run, &ad)?;
        }
        let p = run.file(".safetensors");
        Ok((load_classifier(&p, device)?.0, p.display().to_string()))
    } else if let Some(p) = &cfg.classifier {
        Ok((load_classifier(p, device)?.0, p.display().to_string()))
    } else {
        Ok((
            embedded::default_classifier(device)?.0,
            "embedded lenet-mnist".to_string(),
        ))
    }
}

/// The robust defender's stages, in `<out>/robust/`.
fn robust_defence(cfg: &PipelineConfig, data: &Data, device: &Device) -> Result<DefenceReport> {
    let (classifier, source) = match &cfg.robust_classifier {
        Some(p) => (load_classifier(p, device)?.0, p.display().to_string()),
        None => (
            embedded::robust_classifier(device)?.0,
            "embedded madry-trades-mnist (TRADES, Linf 0.3)".to_string(),
        ),
    };
    let out = cfg.out.join("robust");
    let r = defence_stages(
        cfg,
        data,
        &out,
        "the robust defender",
        classifier,
        source,
        robust_attack_suite(data.colour),
        // A flag withholds the label: the corrected label would come from denoisers the
        // attacker can steer, where the robust classifier's own label holds.
        Policy::Reject,
        |_| {
            let mut list = Vec::new();
            if cfg.robust_denoisers.is_empty() {
                for (net, meta) in embedded::robust_denoisers(device)? {
                    list.push(DefenderDenoiser::new(net, meta));
                }
            } else {
                for p in &cfg.robust_denoisers {
                    let (net, meta) = load_denoiser(p, device, &LoadOptions::default())?;
                    list.push(DefenderDenoiser::new(net, meta));
                }
            }
            Ok(list)
        },
    )?;
    write_report(
        &out,
        &r,
        cfg,
        data,
        "adversarially trained Madry CNN + Defed denoisers (the robust defender)",
    )?;
    Ok(r)
}

/// `results.json`, the side-by-side comparison in `report.md`, and `index.html`.
fn finish(
    cfg: &PipelineConfig,
    paper: DefenceReport,
    robust: Option<DefenceReport>,
) -> Result<PipelineReport> {
    let report = PipelineReport {
        paper,
        robust,
        out: cfg.out.clone(),
    };
    write_atomic(
        cfg.out.join("results.json"),
        &serde_json::to_vec_pretty(&report).expect("serialises"),
    )?;
    if let Some(r) = &report.robust {
        let md = std::fs::read_to_string(cfg.out.join("report.md"))
            .map_err(|e| Error::io(cfg.out.join("report.md"), e))?;
        write_atomic(
            cfg.out.join("report.md"),
            (md + &comparison_markdown(&report.paper, r)).as_bytes(),
        )?;
    }
    crate::eval::html::write_report(&cfg.out)?;
    Ok(report)
}

/// The paper's denoisers: trained here with `--train`, the given files, or the embedded ones.
fn paper_denoisers(
    cfg: &PipelineConfig,
    classifier: &Classifier,
    train: &ImageSet,
) -> Result<Vec<DefenderDenoiser>> {
    let device = crate::default_device();
    let mut denoisers = Vec::new();
    if cfg.train {
        let ad = autodiff_device();
        let clf_ad = classifier.clone().to_device(&ad).frozen();
        for &noise in &cfg.noise {
            progress_line(&format!(
                "stage 4: training Defed (noise {noise}) for {} epochs",
                cfg.denoiser_epochs
            ));
            ad.seed(crate::util::derive_seed(
                cfg.seed,
                noise.to_bits() as u64,
                1,
            ));
            let run = RunOptions {
                out_dir: cfg.out.join("models"),
                name: format!(
                    "defed-{}-n{noise}",
                    cfg.dataset.as_deref().unwrap_or("mnist")
                ),
                epochs: cfg.denoiser_epochs,
                batch_size: 64,
                lr: 1e-3,
                milestones: vec![],
                seed: cfg.seed,
                resume: false,
                progress: cfg.progress,
                source: "defed pipeline --train".into(),
                dataset: cfg
                    .dataset
                    .clone()
                    .unwrap_or_else(|| "mnist-embedded".into()),
            };
            let (tr, va) = train.split(0.1, cfg.seed + 1);
            let dc = DenoiserTrainConfig {
                noise,
                alpha: 1.0,
                edge: Some(EdgeMethod::Laplacian),
                alpha_warmup: 0,
                adversarial: None,
                detection: None,
                average: None,
                augment: Default::default(),
            };
            train_denoiser(
                Defed::new(train.shape[0], EdgeMethod::Laplacian, &ad),
                &clf_ad,
                &tr,
                &va,
                &dc,
                &run,
                &ad,
            )?;
            let (net, meta) =
                load_denoiser(run.file(".safetensors"), &device, &LoadOptions::default())?;
            denoisers.push(DefenderDenoiser::new(net, meta));
        }
    } else if !cfg.denoisers.is_empty() {
        for p in &cfg.denoisers {
            let (net, meta) = load_denoiser(p, &device, &LoadOptions::default())?;
            denoisers.push(DefenderDenoiser::new(net, meta));
        }
    } else {
        for (net, meta) in embedded::default_denoisers(&device)? {
            denoisers.push(DefenderDenoiser::new(net, meta));
        }
    }
    Ok(denoisers)
}

/// Stages 1, 2 and 5 for one defender in `out`: benign set from `val`, `attacks` against the
/// bare classifier, the denoisers from `denoisers`, evaluation grid, calibrated bundle
/// (`defender.safetensors`, all denoisers, k = 2), figures and the small adaptive run.
#[allow(clippy::too_many_arguments)]
fn defence_stages(
    cfg: &PipelineConfig,
    data: &Data,
    out: &Path,
    name: &str,
    classifier: Classifier,
    classifier_source: String,
    attacks_to_run: Vec<Box<dyn Attack>>,
    policy: Policy,
    denoisers: impl FnOnce(&Classifier) -> Result<Vec<DefenderDenoiser>>,
) -> Result<DefenceReport> {
    let device = crate::default_device();
    let val = &data.eval;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    progress_line(&format!("{name}: classifier {classifier_source}"));
    let model = AttackModel::new(&classifier, &device);
    let val_pred = crate::eval::predict(&classifier, val, 500, &device)?;
    let classifier_accuracy = crate::eval::accuracy(&val_pred, &val.labels);
    progress_line(&format!(
        "stage 1: classifier ({classifier_source}) scores {:.2}% on the {} held-out images",
        100.0 * classifier_accuracy,
        val.len()
    ));

    let benign = benign_stage(cfg, &model, val, out)?;
    let end = (cfg.calibration + cfg.attacked).min(benign.len());
    let targets = benign.select(&(cfg.calibration..end).collect::<Vec<_>>());
    let (attacks, adv_sets) = attack_stage(cfg, &model, &targets, attacks_to_run, out)?;

    // Stages 3-4: denoisers.
    let denoisers = denoisers(&classifier)?;
    if denoisers.is_empty() {
        return Err(Error::Invalid(
            "no denoisers: this build embeds none; pass --denoisers or --train".into(),
        ));
    }

    // Stage 5: defender and evaluation.
    let mut defender = Defender::new(classifier.clone(), denoisers, 1.0)?;
    let (evaluation, headline, calibration_spread) =
        evaluation_stage(cfg, &mut defender, policy, &benign, &adv_sets, out, &device)?;
    let adaptive = adaptive_stage(
        cfg,
        &defender,
        &targets,
        adaptive_budgets(data.colour),
        &device,
    )?;
    Ok(DefenceReport {
        classifier_source,
        adaptive,
        classifier_accuracy,
        benign: benign.len(),
        calibration: cfg.calibration,
        attacks,
        evaluation,
        headline,
        calibration_spread,
    })
}

/// Stage 1: the first `cfg.benign` held-out digits the classifier gets right, saved.
fn benign_stage(
    cfg: &PipelineConfig,
    model: &AttackModel,
    val: &ImageSet,
    out: &Path,
) -> Result<ImageSet> {
    let benign = benign_set(model, val, cfg.benign, 500);
    if benign.len() <= cfg.calibration {
        return Err(Error::Invalid(format!(
            "only {} benign images for {} calibration images",
            benign.len(),
            cfg.calibration
        )));
    }
    save_benign(&benign, out.join("benign.npz"))?;
    Ok(benign)
}

/// What stage 2 made: every attack's statistics, and the named sets with at least one
/// adversarial example.
type Attacked = (Vec<AttackStats>, Vec<(String, AdvSet)>);

/// Stage 2: every attack on the held-out (non-calibration) benign images, saved in `adv/`;
/// their statistics, and the sets with at least one adversarial example.
fn attack_stage(
    cfg: &PipelineConfig,
    model: &AttackModel,
    targets: &ImageSet,
    attacks_to_run: Vec<Box<dyn Attack>>,
    out: &Path,
) -> Result<Attacked> {
    let mut attacks = Vec::new();
    let mut adv_sets: Vec<(String, AdvSet)> = Vec::new();
    std::fs::create_dir_all(out.join("adv")).map_err(|e| Error::io(out.join("adv"), e))?;
    for a in attacks_to_run {
        let r = run_attack(
            a.as_ref(),
            model,
            targets,
            50,
            cfg.seed,
            cfg.progress,
            Target::Untargeted,
        )?;
        let s = r.stats.clone().expect("run_attack always measures");
        progress_line(&format!(
            "stage 2: {:<20} {:>5.1}% success, {:.3} s/img",
            s.attack,
            100.0 * s.success_rate,
            s.seconds_per_image
        ));
        save_adv(
            &r,
            out.join("adv")
                .join(format!("{}.npz", crate::attack::file_stem(&s.attack))),
        )?;
        attacks.push(s.clone());
        if !r.src_idx.is_empty() {
            adv_sets.push((s.attack.clone(), r));
        }
    }
    Ok((attacks, adv_sets))
}

/// Stage 5: the evaluation grid (every denoiser, every pair, all together; k = 1, 2, 3 and 5%
/// FPR), the calibrated bundle (all denoisers, k = 2, `policy`) saved as
/// `defender.safetensors`, and the figures. Returns the grid, its k = 2 all-denoiser row and
/// the spread of each denoiser's calibration scores.
fn evaluation_stage(
    cfg: &PipelineConfig,
    defender: &mut Defender,
    policy: Policy,
    benign: &ImageSet,
    adv_sets: &[(String, AdvSet)],
    out: &Path,
    device: &Device,
) -> Result<(Vec<EvalRow>, Option<EvalRow>, Vec<CalibrationSpread>)> {
    let m = defender.denoisers.len();
    let mut sets = singles_and_pairs(m);
    if m > 2 {
        sets.push((0..m).collect());
    }
    let rules = [
        ThresholdRule::KStd(1.0),
        ThresholdRule::KStd(2.0),
        ThresholdRule::KStd(3.0),
        ThresholdRule::Fpr(0.05),
    ];
    let input = EvalInput {
        defender,
        benign,
        calibration: cfg.calibration,
        allow_overlap: false,
        adv: adv_sets,
        sets: &sets,
        rules: &rules,
        batch_size: 250,
    };
    progress_line(&format!(
        "stage 5: scoring {} benign and {} adversarial images under {m} denoisers",
        benign.len(),
        adv_sets.iter().map(|(_, s)| s.src_idx.len()).sum::<usize>()
    ));
    let scores = compute_scores(&input, device)?;
    let evaluation = evaluate(&input, &scores)?;
    let calib = scores.benign.select_images(0..cfg.calibration);
    let spread = calibration_spread(&calib, &defender.names());
    defender.calibrate(
        &calib,
        ThresholdRule::KStd(2.0),
        benign.indices[..cfg.calibration].to_vec(),
        "defed pipeline: held-out benign images",
    )?;
    defender.policy = policy;
    defender.save(out.join("defender.safetensors"))?;
    let headline = evaluation
        .iter()
        .find(|r| r.rule == "k=2" && r.thresholds.len() == m)
        .cloned();
    let figures = crate::eval::report::figures(
        &crate::eval::report::FigureInput {
            defender,
            scores: &scores,
            adv_sets,
            evaluation: &evaluation,
            calibration: cfg.calibration,
        },
        device,
    )?;
    crate::eval::charts::write_figures(out, &figures)?;
    Ok((evaluation, headline, spread))
}

/// The adaptive run's budgets: MNIST's Linf 0.3 and L2 2, or Linf 8/255 and L2 0.5 for colour
/// images.
fn adaptive_budgets(colour: bool) -> [(Norm, f32); 2] {
    if colour {
        [(Norm::Linf, 8.0 / 255.0), (Norm::L2, 0.5)]
    } else {
        [(Norm::Linf, 0.3), (Norm::L2, 2.0)]
    }
}

/// The small white-box adaptive run on the calibrated bundle at `budgets`, if asked.
fn adaptive_stage(
    cfg: &PipelineConfig,
    defender: &Defender,
    targets: &ImageSet,
    budgets: [(Norm, f32); 2],
    device: &Device,
) -> Result<Vec<crate::eval::adaptive::AdaptiveRow>> {
    if cfg.adaptive == 0 {
        return Ok(vec![]);
    }
    progress_line(&format!(
        "adaptive white-box attack on the bundle: {} held-out images, {} {} and {} {}",
        cfg.adaptive.min(targets.len()),
        budgets[0].0.name(),
        budgets[0].1,
        budgets[1].0.name(),
        budgets[1].1
    ));
    crate::eval::adaptive::evaluate_adaptive(
        defender,
        &targets.take(cfg.adaptive),
        &budgets,
        &adaptive_settings(cfg.seed),
        device,
        |_| {},
    )
}

/// Mean detection and mean correct-label rate over the attacks of a headline row.
fn headline_means(h: &EvalRow) -> (f64, f64) {
    let n = h.attacks.len().max(1) as f64;
    (
        h.attacks.iter().map(|a| a.detection).sum::<f64>() / n,
        h.attacks.iter().map(|a| a.accuracy).sum::<f64>() / n,
    )
}

/// The side-by-side table of the paper's and the robust defender.
fn comparison_markdown(paper: &DefenceReport, robust: &DefenceReport) -> String {
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    let row = |r: &DefenceReport| -> Vec<String> {
        let (pass, det, acc) = match &r.headline {
            Some(h) => {
                let (d, a) = headline_means(h);
                (pct(h.benign_pass), pct(d), pct(a))
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        let mut cells = vec![pct(r.classifier_accuracy), pass, det, acc];
        for a in &r.adaptive {
            let (reject, correct) = a.robust_accuracy();
            cells.push(format!("{} / {}", pct(reject), pct(correct)));
        }
        cells
    };
    let budgets: Vec<String> = paper
        .adaptive
        .iter()
        .map(|a| {
            format!(
                "adaptive {} {}: robust acc. reject / correct (worst case with the transfer)",
                a.adaptive.norm.name(),
                a.adaptive.eps
            )
        })
        .collect();
    let mut s = String::from(
        "\n## The paper's defender beside the robust one\n\n\
         The robust defender puts an adversarially trained classifier (TRADES at Linf 0.3, the Madry et al. CNN, trained on the same 9,000 digits) behind Defed denoisers; its full report is in `robust/report.md` (its non-adaptive table covers the gradient attacks: against a robust classifier most attacks fail, and only successful examples are scored). Held-out digits, thresholds k = 2 from held-out calibration images.\n\n",
    );
    s += &format!(
        "| defender | clean accuracy | benign pass (k = 2) | non-adaptive: mean detected | non-adaptive: mean correct label | {} |\n|---|---|---|---|---|{}\n",
        budgets.join(" | "),
        "---|".repeat(budgets.len())
    );
    for (label, r) in [
        ("paper (LeNet + Defed)", paper),
        ("robust (Madry CNN + Defed)", robust),
    ] {
        s += &format!("| {label} | {} |\n", row(r).join(" | "));
    }
    s
}

fn write_report(
    out: &Path,
    r: &DefenceReport,
    cfg: &PipelineConfig,
    data: &Data,
    title: &str,
) -> Result<()> {
    write_atomic(out.join("results.csv"), to_csv(&r.evaluation).as_bytes())?;
    write_atomic(
        out.join("results.json"),
        &serde_json::to_vec_pretty(r).expect("serialises"),
    )?;
    let mut attacks_md = String::from(
        "| attack | success | s/img | mean L0 | mean L1 | mean L2 | mean Linf |\n|---|---|---|---|---|---|---|\n",
    );
    for s in &r.attacks {
        attacks_md += &format!(
            "| {} | {:.1}% ({}/{}) | {:.3} | {:.1} | {:.2} | {:.3} | {:.3} |\n",
            s.attack,
            100.0 * s.success_rate,
            s.succeeded,
            s.attempted,
            s.seconds_per_image,
            s.mean_l0,
            s.mean_l1,
            s.mean_l2,
            s.mean_linf
        );
    }
    write_atomic(
        out.join("attacks.csv"),
        crate::attack::stats_csv(&r.attacks).as_bytes(),
    )?;
    let adaptive_md = if r.adaptive.is_empty() {
        String::new()
    } else {
        let template = adaptive_settings(cfg.seed);
        write_atomic(
            out.join("adaptive.csv"),
            crate::eval::adaptive::adaptive_csv(&r.adaptive).as_bytes(),
        )?;
        format!(
            "\n{}\nA small run (few images and iterations, to keep the main job short); run `defed evaluate --adaptive` for more.\n",
            crate::eval::adaptive::adaptive_markdown(
                &r.adaptive,
                "the calibrated bundle (all denoisers, k = 2)",
                &template
            )
        )
    };
    let headline = match &r.headline {
        Some(h) => {
            let det: f64 =
                h.attacks.iter().map(|a| a.detection).sum::<f64>() / h.attacks.len().max(1) as f64;
            let acc: f64 =
                h.attacks.iter().map(|a| a.accuracy).sum::<f64>() / h.attacks.len().max(1) as f64;
            format!(
                "With all denoisers ({}) and k = 2: {:.1}% of held-out benign images pass unflagged; on average over the attacks {:.1}% of adversarial images are flagged and {:.1}% end with their true label.\n",
                h.set,
                100.0 * h.benign_pass,
                100.0 * det,
                100.0 * acc
            )
        }
        None => String::new(),
    };
    let md = format!(
        "# defed pipeline report: {title}\n\n\
         Classifier: {source}.\n\n\
         Data: {data}.\n\n\
         ## Stage 1: benign set\n\nClassifier accuracy on the held-out images: {acc:.2}%. Kept the first {b} correctly classified; the first {c} calibrate the thresholds, the others are held out for evaluation and attacked.\n\n\
         ## Stage 2: attacks (against the bare classifier)\n\n{attacks_md}\n\
         ## Stage 5: defender\n\n{headline}\n\
         Each attack cell: detection rate / accuracy of the final label / ROC-AUC of the max normalised score. These are non-adaptive attacks: the attacker does not know the defence, so these figures are an upper bound; run `defed evaluate --adaptive --bundle defender.safetensors --benign benign.npz` for the white-box attack (see the README).\n\n{table}\n{spread_md}\
         ## Figures\n\n{figures_md}\
         Files: `benign.npz`, `adv/*.npz` (+ `.json` stats), `attacks.csv`, `results.csv`, `results.json`, `adaptive.csv`, and the calibrated bundle `defender.safetensors` (all denoisers, k = 2).\n{adaptive_md}",
        data = data.description,
        source = r.classifier_source,
        acc = 100.0 * r.classifier_accuracy,
        b = r.benign,
        c = r.calibration,
        table = to_markdown(&r.evaluation),
        spread_md = calibration_section(&r.calibration_spread),
        figures_md = crate::eval::charts::markdown(&crate::eval::charts::read_figures(out)?),
    );
    write_atomic(out.join("report.md"), md.as_bytes())?;
    Ok(())
}
