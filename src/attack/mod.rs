//! Stages 1 and 2: the benign set, and adversarial attacks against a classifier.
//!
//! Every attack implements [`Attack`]: a batch of images and labels in, a batch of candidate
//! adversarial images out, inside `[0, 1]` and within the attack's budget. [`run_attack`]
//! batches a set through an attack, times it, keeps the successful examples and measures them.

pub(crate) mod adaptive;
mod apgd;
mod cw;
mod deepfool;
mod fgsm;
mod hsj;
mod jsma;
mod model;
mod norm;
mod pgd;
mod registry;
mod square;
mod strong;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use adaptive::{AdaptiveConfig, AdaptiveReport, adaptive_attack, adaptive_attack_from};
pub use apgd::{Apgd, ApgdConfig, ApgdLoss};
pub use cw::{CwL2, CwLinf};
pub use deepfool::DeepFool;
pub use fgsm::Fgsm;
pub use hsj::HopSkipJump;
pub use jsma::Jsma;
pub use model::{AttackModel, LossKind};
pub use norm::{Norm, perturbation_sizes, project, step_direction};
pub use pgd::Pgd;
pub(crate) use registry::pipeline_suite_for;
pub use registry::{
    AttackKind, AttackSettings, build_attack, default_eps, paper_grid, transfer_pgd,
};
pub use square::Square;
pub use strong::{
    StrongReport, StrongSettings, StrongStage, strong_attacks, strong_csv, strong_images_csv,
    strong_protocol,
};

use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::io::{NpyArray, read_npz, write_npz};
use crate::util::row;
use crate::util::write_atomic;

/// An adversarial attack.
pub trait Attack {
    /// A short name with its main setting, e.g. `PGD-Linf eps=0.3` (used in file names).
    fn name(&self) -> String;
    /// The norm the attack is measured in.
    fn norm(&self) -> Norm;
    /// The perturbation budget, where the attack has one.
    fn eps(&self) -> Option<f32>;
    /// Adversarial candidates for a batch `x` (flat `N x C x H x W`) with true `labels`.
    /// `targets`, where given and supported, are the classes to reach. `seed` fixes every
    /// random choice.
    fn perturb(
        &self,
        model: &AttackModel,
        x: &[f32],
        labels: &[usize],
        targets: Option<&[usize]>,
        seed: u64,
    ) -> Result<Vec<f32>>;

    /// Whether [`Attack::perturb`] honours `targets`.
    fn supports_targets(&self) -> bool {
        false
    }
}

/// Which class a targeted attack aims for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// Any wrong class (the default).
    #[default]
    Untargeted,
    /// A random wrong class per image (seeded).
    Random,
    /// The next class, `(label + 1) mod classes`.
    Next,
    /// This class; images already of it are left out.
    Class(usize),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" | "untargeted" => Ok(Target::Untargeted),
            "random" => Ok(Target::Random),
            "next" => Ok(Target::Next),
            n => n.parse().map(Target::Class).map_err(|_| {
                format!("target must be untargeted, random, next or a class number, not {n:?}")
            }),
        }
    }
}

/// What an attack run achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackStats {
    /// The attack's name.
    pub attack: String,
    /// Its norm.
    pub norm: Norm,
    /// Its budget.
    pub eps: Option<f32>,
    /// Images attacked.
    pub attempted: usize,
    /// Images whose adversarial version is misclassified.
    pub succeeded: usize,
    /// `succeeded / attempted`.
    pub success_rate: f64,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
    /// `seconds / attempted`.
    pub seconds_per_image: f64,
    /// Mean L0 (changed pixels) of the successful perturbations.
    pub mean_l0: f64,
    /// Mean L1.
    pub mean_l1: f64,
    /// Mean L2.
    pub mean_l2: f64,
    /// Mean Linf.
    pub mean_linf: f64,
    /// Images sent through the network (queries and gradients), per attacked image.
    pub evaluations_per_image: f64,
    /// The seed used.
    pub seed: u64,
    /// Whether success meant reaching a target class.
    #[serde(default)]
    pub targeted: bool,
}

/// Attack runs as CSV (`summary.csv` of `defed attack`), one row per run.
pub fn stats_csv(stats: &[AttackStats]) -> String {
    let mut csv = String::from(
        "attack,norm,eps,attempted,succeeded,success_rate,seconds_per_image,mean_l0,mean_l1,mean_l2,mean_linf,evaluations_per_image,seed\n",
    );
    for s in stats {
        csv += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            s.attack,
            s.norm.name(),
            s.eps.map(|e| e.to_string()).unwrap_or_default(),
            s.attempted,
            s.succeeded,
            s.success_rate,
            s.seconds_per_image,
            s.mean_l0,
            s.mean_l1,
            s.mean_l2,
            s.mean_linf,
            s.evaluations_per_image,
            s.seed
        );
    }
    csv
}

/// Adversarial examples with their sources.
#[derive(Debug, Clone)]
pub struct AdvSet {
    /// The benign sources of the successful examples.
    pub benign: ImageSet,
    /// The adversarial images (same order and shape as `benign`).
    pub adv: Vec<f32>,
    /// The classifier's prediction on each adversarial image.
    pub adv_pred: Vec<usize>,
    /// Index of each example's source in the benign set it was made from.
    pub src_idx: Vec<usize>,
    /// The target class of each example, for targeted attacks (else empty).
    pub targets: Vec<usize>,
    /// How the run went.
    pub stats: Option<AttackStats>,
}

/// Runs `attack` over `set` in batches and keeps the successful examples (prediction different
/// from the true label, or equal to the target for a targeted run), as the original does.
pub fn run_attack(
    attack: &dyn Attack,
    model: &AttackModel,
    set: &ImageSet,
    batch_size: usize,
    seed: u64,
    progress: bool,
    target: Target,
) -> Result<AdvSet> {
    use rand::{RngExt, SeedableRng};
    if target != Target::Untargeted && !attack.supports_targets() {
        return Err(Error::Invalid(format!(
            "{} has no targeted mode",
            attack.name()
        )));
    }
    let classes = model.classes();
    set.check_labels(classes)?;
    if let Target::Class(c) = target
        && c >= classes
    {
        return Err(Error::Invalid(format!(
            "target class {c} >= {classes} classes"
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(crate::util::derive_seed(seed, 99, 99));
    let all_targets: Option<Vec<usize>> = match target {
        Target::Untargeted => None,
        Target::Random => Some(
            set.labels
                .iter()
                .map(|&l| (l + 1 + rng.random_range(0..classes - 1)) % classes)
                .collect(),
        ),
        Target::Next => Some(set.labels.iter().map(|&l| (l + 1) % classes).collect()),
        Target::Class(c) => Some(vec![c; set.len()]),
    };
    // A target equal to the true label is no attack: leave those images out.
    let keep_idx: Vec<usize> = (0..set.len())
        .filter(|&i| all_targets.as_ref().is_none_or(|t| t[i] != set.labels[i]))
        .collect();
    let set = &set.select(&keep_idx);
    let all_targets: Option<Vec<usize>> =
        all_targets.map(|t| keep_idx.iter().map(|&i| t[i]).collect());
    if set.shape != model.image_shape() {
        return Err(Error::Shape(format!(
            "the classifier takes {:?} images, the set holds {:?}",
            model.image_shape(),
            set.shape
        )));
    }
    let per = set.image_len();
    let bar = if progress {
        let b = indicatif::ProgressBar::new(set.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} img  eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_message(attack.name());
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let start = std::time::Instant::now();
    let evals0 = model.evaluations.get();
    let mut keep = Vec::new();
    let mut adv_all = Vec::new();
    let mut pred_all = Vec::new();
    for (b, idx) in crate::data::Batches::sequential(set.len(), batch_size).enumerate() {
        let batch = set.select(&idx);
        let x = &batch.images;
        let tb: Option<Vec<usize>> = all_targets
            .as_ref()
            .map(|t| idx.iter().map(|&i| t[i]).collect());
        let adv = attack.perturb(
            model,
            x,
            &batch.labels,
            tb.as_deref(),
            crate::util::derive_seed(seed, b as u64, 17),
        )?;
        if adv.len() != x.len() || adv.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "{} returned malformed images",
                attack.name()
            )));
        }
        let pred = model.predict(&adv);
        for (j, &i) in idx.iter().enumerate() {
            let fooled = match &tb {
                Some(t) => pred[j] == t[j],
                None => pred[j] != batch.labels[j],
            };
            if fooled {
                keep.push(i);
                adv_all.extend_from_slice(row(&adv, j, per));
                pred_all.push(pred[j]);
            }
        }
        bar.inc(idx.len() as u64);
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let benign = set.select(&keep);
    let mut sums = [0f64; 4];
    for k in 0..keep.len() {
        let s = perturbation_sizes(benign.image(k), row(&adv_all, k, per));
        for (a, b) in sums.iter_mut().zip(s) {
            *a += b;
        }
    }
    let n = keep.len().max(1) as f64;
    let stats = AttackStats {
        attack: attack.name(),
        norm: attack.norm(),
        eps: attack.eps(),
        attempted: set.len(),
        succeeded: keep.len(),
        success_rate: keep.len() as f64 / set.len().max(1) as f64,
        seconds,
        seconds_per_image: seconds / set.len().max(1) as f64,
        mean_l0: sums[0] / n,
        mean_l1: sums[1] / n,
        mean_l2: sums[2] / n,
        mean_linf: sums[3] / n,
        evaluations_per_image: (model.evaluations.get() - evals0) as f64 / set.len().max(1) as f64,
        seed,
        targeted: all_targets.is_some(),
    };
    let targets = all_targets
        .map(|t| keep.iter().map(|&i| t[i]).collect())
        .unwrap_or_default();
    tracing::info!(attack = %stats.attack, success_rate = stats.success_rate, "attack done");
    Ok(AdvSet {
        benign,
        adv: adv_all,
        adv_pred: pred_all,
        src_idx: keep.iter().map(|&i| keep_idx[i]).collect(),
        targets,
        stats: Some(stats),
    })
}

fn shape4(n: usize, s: [usize; 3]) -> Vec<usize> {
    vec![n, s[0], s[1], s[2]]
}

/// Saves a benign set (stage 1) as `.npz`: `images`, `labels`, `test_idx`.
pub fn save_benign(set: &ImageSet, path: impl AsRef<Path>) -> Result<()> {
    let images = NpyArray::f32(shape4(set.len(), set.shape), set.images.clone());
    let labels = NpyArray::i64(
        vec![set.len()],
        set.labels.iter().map(|&l| l as i64).collect(),
    );
    let idx = NpyArray::i64(
        vec![set.len()],
        set.indices.iter().map(|&l| l as i64).collect(),
    );
    write_npz(
        path,
        [("images", &images), ("labels", &labels), ("test_idx", &idx)],
    )
}

/// Saves adversarial examples as `.npz` (`benign`, `adv`, `labels`, `adv_pred`, `src_idx`,
/// `test_idx`) and their stats as JSON next to it (`<stem>.json`).
pub fn save_adv(set: &AdvSet, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let b = &set.benign;
    let n = b.len();
    let benign = NpyArray::f32(shape4(n, b.shape), b.images.clone());
    let adv = NpyArray::f32(shape4(n, b.shape), set.adv.clone());
    let i64s = |v: &[usize]| NpyArray::i64(vec![v.len()], v.iter().map(|&x| x as i64).collect());
    let labels = i64s(&b.labels);
    let pred = i64s(&set.adv_pred);
    let src = i64s(&set.src_idx);
    let test = i64s(&b.indices);
    let targets = i64s(&set.targets);
    let mut arrays = vec![
        ("benign", &benign),
        ("adv", &adv),
        ("labels", &labels),
        ("adv_pred", &pred),
        ("src_idx", &src),
        ("test_idx", &test),
    ];
    if !set.targets.is_empty() {
        arrays.push(("targets", &targets));
    }
    write_npz(path, arrays)?;
    if let Some(stats) = &set.stats {
        let json = serde_json::to_vec_pretty(stats).expect("stats serialise");
        write_atomic(path.with_extension("json"), &json)?;
    }
    Ok(())
}

fn usize_vec(path: &Path, a: &NpyArray, what: &str) -> Result<Vec<usize>> {
    a.to_i64()
        .ok_or_else(|| Error::format(path, format!("{what} must be integers")))?
        .into_iter()
        .map(|v| {
            usize::try_from(v).map_err(|_| Error::format(path, format!("negative {what} {v}")))
        })
        .collect()
}

fn set_from(path: &Path, images: &NpyArray, labels: Vec<usize>) -> Result<ImageSet> {
    let shape = match images.shape.as_slice() {
        [_, c, h, w] => [*c, *h, *w],
        other => {
            return Err(Error::format(
                path,
                format!("images of shape {other:?}, expected N x C x H x W"),
            ));
        }
    };
    ImageSet::new(images.to_f32(), labels, shape).map_err(|e| Error::format(path, e.to_string()))
}

/// Loads a benign set saved by [`save_benign`].
pub fn load_benign(path: impl AsRef<Path>) -> Result<ImageSet> {
    let path = path.as_ref();
    let m = read_npz(path)?;
    let get = |k: &str| {
        m.get(k)
            .ok_or_else(|| Error::format(path, format!("no array {k}")))
    };
    let labels = usize_vec(path, get("labels")?, "labels")?;
    let mut set = set_from(path, get("images")?, labels)?;
    if let Some(t) = m.get("test_idx") {
        set.indices = usize_vec(path, t, "test_idx")?;
    }
    Ok(set)
}

/// Loads adversarial examples saved by [`save_adv`].
pub fn load_adv(path: impl AsRef<Path>) -> Result<AdvSet> {
    let path = path.as_ref();
    let m = read_npz(path)?;
    let get = |k: &str| {
        m.get(k)
            .ok_or_else(|| Error::format(path, format!("no array {k}")))
    };
    let labels = usize_vec(path, get("labels")?, "labels")?;
    let benign = set_from(path, get("benign")?, labels)?;
    let adv_arr = get("adv")?;
    if adv_arr.shape != get("benign")?.shape {
        return Err(Error::format(path, "adv and benign arrays differ in shape"));
    }
    let adv = adv_arr.to_f32();
    crate::data::validate_pixels(&adv).map_err(|e| Error::format(path, e.to_string()))?;
    let stats = std::fs::read(path.with_extension("json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Ok(AdvSet {
        adv_pred: match m.get("adv_pred") {
            Some(a) => usize_vec(path, a, "adv_pred")?,
            None => vec![],
        },
        src_idx: match m.get("src_idx") {
            Some(a) => usize_vec(path, a, "src_idx")?,
            None => (0..benign.len()).collect(),
        },
        targets: match m.get("targets") {
            Some(a) => usize_vec(path, a, "targets")?,
            None => vec![],
        },
        benign,
        adv,
        stats,
    })
}

/// The first `num` images of `set` that `model` classifies correctly, in order, keeping their
/// indices (stage 1).
pub fn benign_set(model: &AttackModel, set: &ImageSet, num: usize, batch_size: usize) -> ImageSet {
    let mut keep = Vec::new();
    let mut start = 0;
    while start < set.len() && keep.len() < num {
        let end = (start + batch_size.max(1)).min(set.len());
        let per = set.image_len();
        let pred = model.predict(&set.images[start * per..end * per]);
        for (j, p) in pred.into_iter().enumerate() {
            if p == set.labels[start + j] && keep.len() < num {
                keep.push(start + j);
            }
        }
        start = end;
    }
    set.select(&keep)
}

/// A budget as attack names show it: `8/255` for a whole number of 255ths that has no short
/// decimal form (the colour-image budgets), the shortest decimal otherwise (`0.3`, `2`).
pub fn fmt_eps(eps: f32) -> String {
    let decimal = format!("{eps}");
    let k = (eps * 255.0).round();
    if decimal.len() > 6 && k >= 1.0 && ((eps * 255.0) - k).abs() < 1e-3 {
        format!("{k}/255")
    } else {
        decimal
    }
}

/// The file stem of an attack's outputs: its name with spaces and slashes replaced.
pub fn file_stem(attack: &str) -> String {
    attack.replace(' ', "_").replace('/', "-")
}

/// The images at positions `idx` of a flat batch of `per`-value images, in that order.
pub(crate) fn gather_images(x: &[f32], idx: &[usize], per: usize) -> Vec<f32> {
    idx.iter().flat_map(|&i| row(x, i, per)).copied().collect()
}

/// Per image, the classes other than its label ranked by `logits` (`N x classes`, flat), most
/// likely first: the targets of targeted attack stages.
pub(crate) fn ranked_wrong_classes(
    logits: &[f32],
    labels: &[usize],
    classes: usize,
) -> Vec<Vec<usize>> {
    labels
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            let z = row(logits, i, classes);
            let mut order: Vec<usize> = (0..classes).filter(|&c| c != y).collect();
            order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
            order
        })
        .collect()
}

/// Clips every value into `[0, 1]`.
pub(crate) fn clip01(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = x.clamp(0.0, 1.0));
}

/// Loads an adversarial set stored as separate `.npy` files `<prefix>_adv.npy`,
/// `<prefix>_benign.npy`, `<prefix>_labels.npy` and optionally `<prefix>_src_idx.npy` (the
/// layout of sets exported from Python tools such as IBM ART).
pub fn load_adv_npy(dir: impl AsRef<Path>, prefix: &str) -> Result<AdvSet> {
    let dir = dir.as_ref();
    let f = |s: &str| dir.join(format!("{prefix}_{s}.npy"));
    let adv_arr = crate::io::read_npy(f("adv"))?;
    let ben_arr = crate::io::read_npy(f("benign"))?;
    let lab_path = f("labels");
    let labels = usize_vec(&lab_path, &crate::io::read_npy(&lab_path)?, "labels")?;
    if adv_arr.shape != ben_arr.shape {
        return Err(Error::format(
            f("adv"),
            "adv and benign arrays differ in shape",
        ));
    }
    let benign = set_from(&f("benign"), &ben_arr, labels)?;
    let adv = adv_arr.to_f32();
    crate::data::validate_pixels(&adv).map_err(|e| Error::format(f("adv"), e.to_string()))?;
    let src_idx = if f("src_idx").exists() {
        let p = f("src_idx");
        usize_vec(&p, &crate::io::read_npy(&p)?, "src_idx")?
    } else {
        (0..benign.len()).collect()
    };
    Ok(AdvSet {
        adv_pred: vec![],
        targets: vec![],
        src_idx,
        benign,
        adv,
        stats: None,
    })
}

#[cfg(test)]
mod tests {
    use super::{file_stem, fmt_eps};

    #[test]
    fn budgets_read_as_people_write_them() {
        assert_eq!(fmt_eps(0.3), "0.3");
        assert_eq!(fmt_eps(2.0), "2");
        assert_eq!(fmt_eps(64.0 / 256.0), "0.25");
        assert_eq!(fmt_eps(80.0 / 256.0), "0.3125");
        assert_eq!(fmt_eps(8.0 / 255.0), "8/255");
        assert_eq!(fmt_eps(2.0 / 255.0), "2/255");
        assert_eq!(file_stem("PGD-Linf eps=8/255"), "PGD-Linf_eps=8-255");
    }
}
