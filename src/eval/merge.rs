//! Merging the outputs of split runs into one folder and one report. Two kinds of split:
//! job shards (`--shard i/n`: disjoint attacks or budgets on the same images) and image
//! chunks (the same attacks and budgets on disjoint images, e.g. one run per hundred images).
//!
//! Tables are concatenated: `summary.csv` / `summary.json` of attack runs, `strong.csv` /
//! `strong.json` of the strong suite, `results.csv` / `results.json` of evaluations,
//! `adaptive.csv` / `adaptive.json` of adaptive evaluations, and the per-image tables
//! `adaptive-images.csv` and `strong-images.csv`; the
//! shards' headers must agree. Where a row's key (attack and budget; budget; budget and
//! policy) comes from more than one shard, the shards are image chunks and the rows are also
//! pooled over all their images (shares weighted by images, times summed) into
//! `summary-pooled.csv`, `strong-pooled.csv` and `adaptive-pooled.csv`; an image in two
//! chunks' per-image table is refused (the chunks overlap).
//!
//! A run's own report (its `figures.json` and the figures it names, `adaptive.md`,
//! `report.md`, `index.html`) is not copied: the figures are drawn again from the pooled rows,
//! and `merged.md` (with `index.html`) reports the pooled figures beside each shard's. Every
//! other file (adversarial sets, checkpoints, training logs) is copied; a name present in two
//! job shards must hold the same bytes, while image chunks keep their own versions of a name
//! (each chunk's adversarial sets) in `shard-K/`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::attack::{AttackStats, StrongReport, stats_csv, strong_csv};
use crate::error::{Error, Result};
use crate::eval::adaptive::{AdaptiveRow, adaptive_csv};
use crate::eval::charts::{FIGURES_FILE, read_figures};
use crate::util::{read_file, write_atomic};

/// Tables merged row by row: (CSV, JSON array) file names.
const TABLES: [(&str, &str); 4] = [
    ("summary.csv", "summary.json"),
    ("strong.csv", "strong.json"),
    ("results.csv", "results.json"),
    ("adaptive.csv", "adaptive.json"),
];

/// Per-image tables (CSV only) of the adaptive attack and the strong suite, keyed by their first
/// three columns (norm, eps, image index).
const IMAGE_TABLES: [&str; 2] = ["adaptive-images.csv", "strong-images.csv"];

/// A run's report files, drawn from its tables: the merge draws its own.
const REPORTS: [&str; 4] = [
    "adaptive.md",
    "report.md",
    crate::eval::html::INDEX,
    FIGURES_FILE,
];

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeSummary {
    /// Shard folders read.
    pub shards: usize,
    /// Merged tables and their data rows.
    pub tables: BTreeMap<String, usize>,
    /// Files copied.
    pub copied: usize,
    /// Training runs found (`*.log.json`).
    pub training_runs: Vec<String>,
    /// Whether the shards are image chunks (a table key in more than one shard), whose rows
    /// were pooled.
    pub chunked: bool,
    /// The pooled rows, one line each (attack runs, strong suite, adaptive attack).
    pub pooled: Vec<String>,
    /// Files kept per shard in `shard-K/` (one name, other bytes, in image chunks).
    pub per_shard: usize,
}

/// The rows of the typed tables, each with the shard it came from.
#[derive(Default)]
struct Rows {
    stats: Vec<(usize, AttackStats)>,
    strong: Vec<(usize, StrongReport)>,
    adaptive: Vec<(usize, AdaptiveRow)>,
}

/// Merges the shard folders `shards` into `out` (created if needed). Files written are
/// atomic; nothing in the shards is changed.
pub fn merge_shards(shards: &[PathBuf], out: &Path) -> Result<MergeSummary> {
    if shards.is_empty() {
        return Err(Error::Invalid("no shard folders to merge".into()));
    }
    let mut summary = MergeSummary {
        shards: shards.len(),
        ..Default::default()
    };
    // name -> each distinct version (shard, path) of the files to copy.
    let mut files: BTreeMap<String, Vec<(usize, PathBuf)>> = BTreeMap::new();
    // name -> the merged table of that name.
    let mut csv: BTreeMap<&str, Table> = BTreeMap::new();
    // table and (norm, eps, index) of the per-image tables -> shard.
    let mut images: HashMap<String, usize> = HashMap::new();
    let mut json: BTreeMap<&str, Vec<(usize, serde_json::Value)>> = BTreeMap::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for (k, dir) in shards.iter().enumerate() {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "shard {k}: {} is not a folder",
                dir.display()
            )));
        }
        let real = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        if let Some(other) = seen.iter().position(|d| *d == real) {
            return Err(Error::Invalid(format!(
                "shard {k} ({}) is shard {other} again",
                dir.display()
            )));
        }
        seen.push(real);
        let figures: HashSet<String> = read_figures(dir)?
            .iter()
            .flat_map(|f| [format!("{}.svg", f.name), format!("{}.png", f.name)])
            .collect();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            let path = e.path();
            if name.starts_with('.')
                || name == "merged.md"
                || REPORTS.contains(&name.as_str())
                || figures.contains(&name)
            {
                continue;
            }
            let table = TABLES
                .iter()
                .map(|(c, _)| *c)
                .chain(IMAGE_TABLES)
                .find(|c| *c == name);
            if let Some(c) = table {
                let text = String::from_utf8(read_file(&path)?)
                    .map_err(|_| Error::format(&path, "not UTF-8 text"))?;
                let mut lines = text.lines();
                let header = lines.next().unwrap_or("").to_string();
                let slot = csv
                    .entry(c)
                    .or_insert_with(|| (header.clone(), Vec::new(), HashSet::new()));
                // A later version of a table may add columns at its end; the merged table
                // has them all, empty where a shard lacks them.
                if slot.0 != header {
                    if header.starts_with(&format!("{},", slot.0)) {
                        slot.0 = header.clone();
                    } else if !slot.0.starts_with(&format!("{header},")) {
                        return Err(Error::format(
                            &path,
                            format!(
                                "its columns differ from the other shards' {c}: {header:?} vs {:?}",
                                slot.0
                            ),
                        ));
                    }
                }
                let own = header.split(',').count();
                for l in lines.filter(|l| !l.trim().is_empty()) {
                    if IMAGE_TABLES.contains(&c) {
                        let key: Vec<&str> = l.splitn(4, ',').take(3).collect();
                        if let Some(other) = images.insert(format!("{c}:{}", key.join(",")), k)
                            && other != k
                        {
                            return Err(Error::Invalid(format!(
                                "image {} at {} {} is in shard {other} ({}) and shard {k} ({}): the chunks overlap",
                                key.get(2).unwrap_or(&"?"),
                                key[0],
                                key.get(1).unwrap_or(&"?"),
                                shards[other].display(),
                                dir.display()
                            )));
                        }
                    } else if !slot.2.insert(l.to_string()) {
                        continue;
                    }
                    slot.1.push((l.to_string(), own));
                }
                continue;
            }
            if let Some((_, j)) = TABLES.iter().find(|(_, j)| *j == name) {
                let v: serde_json::Value = serde_json::from_slice(&read_file(&path)?)
                    .map_err(|e| Error::format(&path, format!("not JSON: {e}")))?;
                let rows = match v {
                    serde_json::Value::Array(rows) => rows,
                    other => vec![other],
                };
                let slot = json.entry(j).or_default();
                for r in rows {
                    if !slot.iter().any(|(_, x)| *x == r) {
                        slot.push((k, r));
                    }
                }
                continue;
            }
            // A name met again: compare with each version kept so far, reading only those of
            // the same size.
            let versions = files.entry(name).or_default();
            let size = |p: &Path| {
                std::fs::metadata(p)
                    .map(|m| m.len())
                    .map_err(|e| Error::io(p, e))
            };
            let mut known = false;
            if !versions.is_empty() {
                let (len, bytes) = (size(&path)?, read_file(&path)?);
                for (_, p) in versions.iter() {
                    if size(p)? == len && read_file(p)? == bytes {
                        known = true;
                        break;
                    }
                }
            }
            if !known {
                versions.push((k, path));
            }
        }
    }
    let rows = Rows {
        stats: typed(&json, "summary.json", shards)?,
        strong: typed(&json, "strong.json", shards)?,
        adaptive: typed(&json, "adaptive.json", shards)?,
    };
    summary.chunked = in_several_shards(&rows.stats, stats_key)
        || in_several_shards(&rows.strong, strong_key)
        || in_several_shards(&rows.adaptive, adaptive_key);
    if !summary.chunked
        && let Some((name, v)) = files.iter().find(|(_, v)| v.len() > 1)
    {
        return Err(Error::Invalid(format!(
            "{name} differs between shard {} ({}) and shard {} ({}): the shards overlap",
            v[0].0,
            v[0].1.display(),
            v[1].0,
            v[1].1.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for (name, versions) in &files {
        if versions.len() == 1 {
            write_atomic(out.join(name), &read_file(&versions[0].1)?)?;
            summary.copied += 1;
        } else {
            for (k, path) in versions {
                write_atomic(out.join(format!("shard-{k}")).join(name), &read_file(path)?)?;
                summary.per_shard += 1;
            }
        }
        if let Some(run) = name.strip_suffix(".log.json") {
            summary.training_runs.push(run.to_string());
        }
    }
    for (name, (header, rows, _)) in &csv {
        let mut text = format!("{header}\n");
        let columns = header.split(',').count();
        for (r, own) in rows {
            text.push_str(r);
            text.push_str(&",".repeat(columns.saturating_sub(*own)));
            text.push('\n');
        }
        write_atomic(out.join(name), text.as_bytes())?;
        summary.tables.insert(name.to_string(), rows.len());
    }
    for (name, rows) in &json {
        let rows: Vec<&serde_json::Value> = rows.iter().map(|(_, v)| v).collect();
        write_atomic(
            out.join(name),
            &serde_json::to_vec_pretty(&rows).expect("JSON values serialise"),
        )?;
    }
    let stats = pool_attack_stats(&values(&rows.stats));
    let strong = pool_strong(&values(&rows.strong))?;
    let adaptive = pool_adaptive(&values(&rows.adaptive));
    if summary.chunked {
        for (name, rows, text) in [
            ("summary-pooled.csv", stats.len(), stats_csv(&stats)),
            ("strong-pooled.csv", strong.len(), strong_csv(&strong)),
            (
                "adaptive-pooled.csv",
                adaptive.len(),
                adaptive_csv(&adaptive),
            ),
        ] {
            if rows > 0 {
                write_atomic(out.join(name), text.as_bytes())?;
            }
        }
        summary.pooled = pooled_lines(&stats, &strong, &adaptive);
    }
    let figures: Vec<_> = [
        crate::eval::figures::sweep_figure(&stats),
        crate::eval::figures::strong_figure(&strong),
        crate::eval::figures::adaptive_figure(&adaptive),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !figures.is_empty() {
        crate::eval::charts::write_figures(out, &figures)?;
    }
    let mut md = report(shards, out, &summary, &rows, (&stats, &strong, &adaptive))?;
    if !figures.is_empty() {
        md += "\n## Figures\n\n";
        md += &crate::eval::charts::markdown(&figures);
    }
    write_atomic(out.join("merged.md"), md.as_bytes())?;
    crate::eval::html::write_report(out)?;
    Ok(summary)
}

/// The rows of JSON table `name`, parsed, with their shards.
fn typed<T: DeserializeOwned>(
    json: &BTreeMap<&str, Vec<(usize, serde_json::Value)>>,
    name: &str,
    shards: &[PathBuf],
) -> Result<Vec<(usize, T)>> {
    json.get(name)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            serde_json::from_value(v.clone())
                .map(|r| (*k, r))
                .map_err(|e| {
                    Error::format(shards[*k].join(name), format!("a row is not readable: {e}"))
                })
        })
        .collect()
}

fn values<T: Clone>(rows: &[(usize, T)]) -> Vec<T> {
    rows.iter().map(|(_, r)| r.clone()).collect()
}

/// Whether some key comes from more than one shard.
fn in_several_shards<T, K: PartialEq>(rows: &[(usize, T)], key: impl Fn(&T) -> K) -> bool {
    rows.iter().enumerate().any(|(i, (k, r))| {
        rows[..i]
            .iter()
            .any(|(k2, r2)| k2 != k && key(r2) == key(r))
    })
}

fn stats_key(s: &AttackStats) -> (String, crate::attack::Norm, Option<u32>, bool) {
    (
        s.attack.clone(),
        s.norm,
        s.eps.map(f32::to_bits),
        s.targeted,
    )
}

fn strong_key(r: &StrongReport) -> (crate::attack::Norm, u32) {
    (r.norm, r.eps.to_bits())
}

fn adaptive_key(r: &AdaptiveRow) -> (crate::attack::Norm, u32, crate::defense::Policy) {
    (r.adaptive.norm, r.adaptive.eps.to_bits(), r.adaptive.policy)
}

/// `rows` grouped by `key`, groups in order of first appearance.
fn groups<T, K: PartialEq>(rows: &[T], key: impl Fn(&T) -> K) -> Vec<Vec<&T>> {
    let mut keys: Vec<K> = Vec::new();
    let mut out: Vec<Vec<&T>> = Vec::new();
    for r in rows {
        let k = key(r);
        match keys.iter().position(|x| *x == k) {
            Some(i) => out[i].push(r),
            None => {
                keys.push(k);
                out.push(vec![r]);
            }
        }
    }
    out
}

/// The mean of `value` over `rows` weighted by `weight` (the first row's value when every
/// weight is zero).
fn weighted<T>(rows: &[&T], weight: impl Fn(&T) -> f64, value: impl Fn(&T) -> f64) -> f64 {
    let total: f64 = rows.iter().map(|r| weight(r)).sum();
    if total > 0.0 {
        rows.iter().map(|r| weight(r) * value(r)).sum::<f64>() / total
    } else {
        rows.first().map(|r| value(r)).unwrap_or(f64::NAN)
    }
}

/// Attack runs of one attack and budget on disjoint images, pooled: counts and times summed,
/// perturbation sizes averaged over the successful examples, queries over the attacked images.
pub fn pool_attack_stats(rows: &[AttackStats]) -> Vec<AttackStats> {
    groups(rows, stats_key)
        .into_iter()
        .map(|g| {
            let attempted: usize = g.iter().map(|s| s.attempted).sum();
            let succeeded: usize = g.iter().map(|s| s.succeeded).sum();
            let seconds: f64 = g.iter().map(|s| s.seconds).sum();
            let by_success = |f: fn(&AttackStats) -> f64| weighted(&g, |s| s.succeeded as f64, f);
            AttackStats {
                attempted,
                succeeded,
                success_rate: succeeded as f64 / attempted.max(1) as f64,
                seconds,
                seconds_per_image: seconds / attempted.max(1) as f64,
                mean_l0: by_success(|s| s.mean_l0),
                mean_l1: by_success(|s| s.mean_l1),
                mean_l2: by_success(|s| s.mean_l2),
                mean_linf: by_success(|s| s.mean_linf),
                evaluations_per_image: weighted(
                    &g,
                    |s| s.attempted as f64,
                    |s| s.evaluations_per_image,
                ),
                ..g[0].clone()
            }
        })
        .collect()
}

/// Strong-suite reports of one budget on disjoint images, pooled stage by stage; the shards
/// must have run the same attacks.
pub fn pool_strong(reports: &[StrongReport]) -> Result<Vec<StrongReport>> {
    groups(reports, strong_key)
        .into_iter()
        .map(|g| {
            let names = |r: &StrongReport| -> Vec<String> {
                r.stages.iter().map(|s| s.attack.clone()).collect()
            };
            if let Some(other) = g.iter().find(|r| names(r) != names(g[0])) {
                return Err(Error::Invalid(format!(
                    "the strong suite at {} {} ran other attacks in one shard ({}) than in another ({})",
                    g[0].norm.name(),
                    g[0].eps,
                    names(g[0]).join(", "),
                    names(other).join(", ")
                )));
            }
            let images = |r: &StrongReport| r.images as f64;
            let stages = (0..g[0].stages.len())
                .map(|i| crate::attack::StrongStage {
                    attack: g[0].stages[i].attack.clone(),
                    attempted: g.iter().map(|r| r.stages[i].attempted).sum(),
                    broken: g.iter().map(|r| r.stages[i].broken).sum(),
                    robust_accuracy: weighted(&g, images, |r| r.stages[i].robust_accuracy),
                    seconds: g.iter().map(|r| r.stages[i].seconds).sum(),
                })
                .collect();
            Ok(StrongReport {
                images: g.iter().map(|r| r.images).sum(),
                clean_accuracy: weighted(&g, images, |r| r.clean_accuracy),
                robust_accuracy: weighted(&g, images, |r| r.robust_accuracy),
                stages,
                // Per-image data stays in each chunk's own files.
                adv: Vec::new(),
                broken: Vec::new(),
                broken_at: Vec::new(),
                final_label: Vec::new(),
                ..g[0].clone()
            })
        })
        .collect()
}

/// Adaptive-attack rows of one budget and policy on disjoint images, pooled: every share
/// weighted by the images, times summed, the largest perturbation kept.
pub fn pool_adaptive(rows: &[AdaptiveRow]) -> Vec<AdaptiveRow> {
    groups(rows, adaptive_key)
        .into_iter()
        .map(|g| {
            let w = |r: &AdaptiveRow| r.adaptive.images as f64;
            let share = |f: fn(&AdaptiveRow) -> f64| weighted(&g, w, f);
            let mut pooled = g[0].clone();
            let a = &mut pooled.adaptive;
            // Per-image data stays in each chunk's own files.
            a.adv.clear();
            a.verdicts.clear();
            a.perturbations.clear();
            a.images = g.iter().map(|r| r.adaptive.images).sum();
            a.evade_success = share(|r| r.adaptive.evade_success);
            a.flagged = share(|r| r.adaptive.flagged);
            a.wrong_label = share(|r| r.adaptive.wrong_label);
            a.robust_accuracy_reject = share(|r| r.adaptive.robust_accuracy_reject);
            a.robust_accuracy_correct = share(|r| r.adaptive.robust_accuracy_correct);
            a.robust_accuracy = share(|r| r.adaptive.robust_accuracy);
            a.clean_pass = share(|r| r.adaptive.clean_pass);
            a.clean_accuracy = share(|r| r.adaptive.clean_accuracy);
            a.seconds = g.iter().map(|r| r.adaptive.seconds).sum();
            a.max_perturbation = g
                .iter()
                .map(|r| r.adaptive.max_perturbation)
                .fold(0.0, f64::max);
            pooled.transfer_evade_success = share(|r| r.transfer_evade_success);
            pooled.transfer_flagged = share(|r| r.transfer_flagged);
            pooled.transfer_wrong_label = share(|r| r.transfer_wrong_label);
            pooled.transfer_verdicts.clear();
            // Known for the pool only when known for every chunk.
            let worst = |f: fn(&AdaptiveRow) -> Option<f64>| {
                g.iter()
                    .all(|r| f(r).is_some())
                    .then(|| weighted(&g, w, |r| f(r).unwrap_or(0.0)))
            };
            pooled.worst_robust_accuracy_reject = worst(|r| r.worst_robust_accuracy_reject);
            pooled.worst_robust_accuracy_correct = worst(|r| r.worst_robust_accuracy_correct);
            pooled
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// The worst case of the adaptive attack and the transfer, "reject / correct", where known.
fn worst_case(r: &AdaptiveRow) -> Option<String> {
    Some(format!(
        "{} / {}",
        pct(r.worst_robust_accuracy_reject?),
        pct(r.worst_robust_accuracy_correct?)
    ))
}

/// A merged CSV table: its header (the widest of the shards'), each row with the column count
/// of its shard's header, and the rows seen so far.
type Table = (String, Vec<(String, usize)>, HashSet<String>);

/// One line per pooled row, for the terminal.
fn pooled_lines(
    stats: &[AttackStats],
    strong: &[StrongReport],
    adaptive: &[AdaptiveRow],
) -> Vec<String> {
    let mut lines = Vec::new();
    for s in stats {
        lines.push(format!(
            "{} {}{}: {} images, success {} ({})",
            s.attack,
            s.norm.name(),
            s.eps.map(|e| format!(" {e}")).unwrap_or_default(),
            s.attempted,
            pct(s.success_rate),
            s.succeeded
        ));
    }
    for r in strong {
        lines.push(format!(
            "strong suite {} {}: {} images, clean {}, robust {}",
            r.norm.name(),
            r.eps,
            r.images,
            pct(r.clean_accuracy),
            pct(r.robust_accuracy)
        ));
    }
    for r in adaptive {
        let a = &r.adaptive;
        let worst = worst_case(r)
            .map(|w| format!(" (worst case with the transfer: {w})"))
            .unwrap_or_default();
        lines.push(format!(
            "adaptive {} {} ({} policy): {} images, robust accuracy {} under reject, {} under correct{worst}; evade {}, flagged {}, clean pass {}",
            a.norm.name(),
            a.eps,
            a.policy,
            a.images,
            pct(a.robust_accuracy_reject),
            pct(a.robust_accuracy_correct),
            pct(a.evade_success),
            pct(a.flagged),
            pct(a.clean_pass)
        ));
    }
    lines
}

/// Each shard's value of the rows with `key`'s key, as `k: value` pairs.
fn by_shard<T, K: PartialEq>(
    rows: &[(usize, T)],
    key: impl Fn(&T) -> K,
    of: &T,
    value: impl Fn(&T) -> f64,
) -> String {
    rows.iter()
        .filter(|(_, r)| key(r) == key(of))
        .map(|(k, r)| format!("{k}: {}", pct(value(r))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The merged report: shards, tables, pooled rows, attack runs and training runs.
fn report(
    shards: &[PathBuf],
    out: &Path,
    s: &MergeSummary,
    rows: &Rows,
    (stats, strong, adaptive): (&[AttackStats], &[StrongReport], &[AdaptiveRow]),
) -> Result<String> {
    let mut md = String::from("# Merged shards\n\n");
    for (k, d) in shards.iter().enumerate() {
        md += &format!("- shard {k}: `{}`\n", d.display());
    }
    md += &format!("\n{} files copied.\n", s.copied);
    if s.per_shard > 0 {
        md += &format!(
            "{} files of one name with other contents in several chunks are kept per shard in `shard-K/`.\n",
            s.per_shard
        );
    }
    for (name, rows) in &s.tables {
        md += &format!("- `{name}`: {rows} rows\n");
    }
    if s.chunked {
        md += "\nThe shards are image chunks (the same attacks and budgets on other images): \
               the tables below pool their rows over all the images (`*-pooled.csv`); \
               \"by shard\" gives each shard's own figure.\n";
    }
    if !stats.is_empty() {
        md += "\n## Attacks\n\n| attack | norm | eps | attempted | succeeded | success rate | s / image | by shard |\n|---|---|---|---|---|---|---|---|\n";
        for r in stats {
            md += &format!(
                "| {} | {} | {} | {} | {} | {:.2}% | {:.4} | {} |\n",
                r.attack,
                r.norm.name(),
                r.eps.map(|e| e.to_string()).unwrap_or_default(),
                r.attempted,
                r.succeeded,
                100.0 * r.success_rate,
                r.seconds_per_image,
                by_shard(&rows.stats, stats_key, r, |x| x.success_rate),
            );
        }
    }
    if !strong.is_empty() {
        md += "\n## Strong suite\n\n| norm | eps | images | clean accuracy | robust accuracy | after each stage | robust accuracy by shard |\n|---|---|---|---|---|---|---|\n";
        for r in strong {
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.norm.name(),
                r.eps,
                r.images,
                pct(r.clean_accuracy),
                pct(r.robust_accuracy),
                r.stages
                    .iter()
                    .map(|st| format!("{} {}", st.attack, pct(st.robust_accuracy)))
                    .collect::<Vec<_>>()
                    .join(" -> "),
                by_shard(&rows.strong, strong_key, r, |x| x.robust_accuracy),
            );
        }
    }
    if !adaptive.is_empty() {
        md += "\n## Adaptive attack\n\n| norm | eps | policy | images | clean pass | evade | flagged | wrong label | robust acc. (reject) | robust acc. (correct) | worst case with the transfer (reject / correct) | robust acc. (reject) by shard |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
        for r in adaptive {
            let a = &r.adaptive;
            let worst = worst_case(r).unwrap_or_else(|| "-".to_string());
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {worst} | {} |\n",
                a.norm.name(),
                a.eps,
                a.policy,
                a.images,
                pct(a.clean_pass),
                pct(a.evade_success),
                pct(a.flagged),
                pct(a.wrong_label),
                pct(a.robust_accuracy_reject),
                pct(a.robust_accuracy_correct),
                by_shard(&rows.adaptive, adaptive_key, r, |x| x
                    .adaptive
                    .robust_accuracy_reject),
            );
        }
    }
    if !s.training_runs.is_empty() {
        md += "\n## Training runs\n\n| run | epochs | last epoch's figures |\n|---|---|---|\n";
        for run in &s.training_runs {
            let p = out.join(format!("{run}.log.json"));
            let v: serde_json::Value = serde_json::from_slice(&read_file(&p)?)
                .map_err(|e| Error::format(&p, format!("not JSON: {e}")))?;
            let epochs = v.as_array().map(|a| a.len()).unwrap_or(0);
            let last = v
                .as_array()
                .and_then(|a| a.last())
                .and_then(|l| l.as_object())
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| k.starts_with("val_"))
                        .map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            md += &format!("| {run} | {epochs} | {last} |\n");
        }
    }
    Ok(md)
}

/// Parses `i/n` (shard i of n, 0-based) as given to `--shard`.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::Invalid(format!(
            "--shard {s}: expected i/n with 0 <= i < n, e.g. 0/4"
        ))
    };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// Whether job `k` of a grid belongs to shard `i` of `n` (jobs dealt round-robin).
pub fn in_shard(k: usize, (i, n): (usize, usize)) -> bool {
    k % n == i
}

/// The jobs of a grid that belong to `shard`, in order.
pub fn take_shard<T>(jobs: Vec<T>, shard: (usize, usize)) -> Vec<T> {
    jobs.into_iter()
        .enumerate()
        .filter(|(k, _)| in_shard(*k, shard))
        .map(|(_, j)| j)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_and_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, out) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("out"),
        );
        for (d, row, file) in [(&a, "x,1", "x.npz"), (&b, "y,2", "y.npz")] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("summary.csv"), format!("attack,n\n{row}\n")).unwrap();
            std::fs::write(d.join(file), row).unwrap();
            std::fs::write(
                d.join(format!("{file}.log.json")),
                r#"[{"epoch": 1, "val_loss": 0.5}]"#,
            )
            .unwrap();
        }
        let s = merge_shards(&[a.clone(), b.clone()], &out).unwrap();
        assert_eq!(s.tables["summary.csv"], 2);
        assert_eq!(s.training_runs.len(), 2);
        assert_eq!(
            std::fs::read_to_string(out.join("summary.csv")).unwrap(),
            "attack,n\nx,1\ny,2\n"
        );
        assert!(out.join("x.npz").exists() && out.join("y.npz").exists());
        assert!(
            std::fs::read_to_string(out.join("merged.md"))
                .unwrap()
                .contains("val_loss 0.5000")
        );
        // The same name with other bytes: overlapping shards.
        std::fs::write(b.join("x.npz"), "other").unwrap();
        let e = merge_shards(&[a.clone(), b.clone()], &out).unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        std::fs::remove_file(b.join("x.npz")).unwrap();
        // Different columns.
        std::fs::write(b.join("summary.csv"), "attack,m\ny,2\n").unwrap();
        let e = merge_shards(&[a, b], &out).unwrap_err();
        assert!(e.to_string().contains("columns differ"), "{e}");
    }

    fn adaptive_row(
        images: usize,
        reject: f64,
        index: usize,
        worst: Option<f64>,
    ) -> (String, String) {
        let json = format!(
            r#"[{{"norm": "Linf", "eps": 0.3, "images": {images}, "evade_success": {e},
            "flagged": 0.5, "wrong_label": 0.5, "robust_accuracy_reject": {reject},
            "robust_accuracy_correct": 0.5, "robust_accuracy": {reject}, "policy": "reject",
            "seconds": 10.0, "max_perturbation": 0.3, "clean_pass": 1.0, "clean_accuracy": 1.0,
            "transfer_evade_success": 0.0, "transfer_flagged": 1.0, "transfer_wrong_label": 0.0{w}}}]"#,
            e = 1.0 - reject,
            w = worst
                .map(|v| format!(
                    r#", "worst_robust_accuracy_reject": {v}, "worst_robust_accuracy_correct": 0.5"#
                ))
                .unwrap_or_default()
        );
        // Rows with the worst case have the per-image table's later, longer header.
        let per_image = match worst {
            Some(_) => format!("norm,eps,index,transfer_evaded\nLinf,0.3,{index},0\n"),
            None => format!("norm,eps,index\nLinf,0.3,{index}\n"),
        };
        (json, per_image)
    }

    #[test]
    fn image_chunks_are_pooled_and_overlaps_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, out) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("out"),
        );
        // 100 images at 90% and 300 at 98%: 96% over the 400; the worst case known for the
        // second chunk only.
        for (d, images, reject, index, worst) in
            [(&a, 100, 0.9, 0, None), (&b, 300, 0.98, 100, Some(0.98))]
        {
            std::fs::create_dir_all(d).unwrap();
            let (json, per_image) = adaptive_row(images, reject, index, worst);
            std::fs::write(d.join("adaptive.json"), json).unwrap();
            std::fs::write(d.join(IMAGE_TABLES[0]), per_image).unwrap();
            // A run's own report and figures are not copied; its data files are kept per chunk.
            std::fs::write(d.join("adaptive.md"), format!("# {images}")).unwrap();
            std::fs::write(
                d.join("figures.json"),
                r#"[{"name": "adaptive", "caption": "c", "panels": []}]"#,
            )
            .unwrap();
            std::fs::write(d.join("adaptive.svg"), format!("<svg>{images}</svg>")).unwrap();
            std::fs::write(d.join("examples.npz"), format!("{images}")).unwrap();
        }
        let s = merge_shards(&[a.clone(), b.clone()], &out).unwrap();
        assert!(s.chunked);
        assert_eq!(s.per_shard, 2);
        assert!(
            s.pooled[0].contains("400 images, robust accuracy 96.0% under reject"),
            "{:?}",
            s.pooled
        );
        let pooled = std::fs::read_to_string(out.join("adaptive-pooled.csv")).unwrap();
        let row: Vec<&str> = pooled.lines().nth(1).unwrap().split(',').collect();
        assert_eq!((row[2], row[6]), ("400", "0.96"), "{pooled}");
        assert_eq!(row[13], "20", "times add up: {pooled}");
        assert_eq!(
            std::fs::read_to_string(out.join("shard-1/examples.npz")).unwrap(),
            "300"
        );
        assert!(!out.join("adaptive.md").exists() && !out.join("examples.npz").exists());
        let md = std::fs::read_to_string(out.join("merged.md")).unwrap();
        assert!(
            md.contains("| 96.0% | 50.0% | - | 0: 90.0%, 1: 98.0% |"),
            "{md}"
        );
        // The per-image tables' columns widen to the later header.
        assert_eq!(
            std::fs::read_to_string(out.join(IMAGE_TABLES[0])).unwrap(),
            "norm,eps,index,transfer_evaded\nLinf,0.3,0,\nLinf,0.3,100,0\n"
        );
        // With the worst case known for both chunks it is pooled too.
        let (json, _) = adaptive_row(100, 0.9, 0, Some(0.86));
        std::fs::write(a.join("adaptive.json"), json).unwrap();
        let s = merge_shards(&[a.clone(), b.clone()], &out).unwrap();
        assert!(
            s.pooled[0].contains("(worst case with the transfer: 95.0% / 50.0%)"),
            "{:?}",
            s.pooled
        );
        assert!(out.join("adaptive.png").exists() && out.join("index.html").exists());
        // The same image in two chunks.
        std::fs::write(b.join(IMAGE_TABLES[0]), "norm,eps,index\nLinf,0.3,0\n").unwrap();
        let e = merge_shards(&[a.clone(), b.clone()], &out).unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        // The same folder twice.
        let e = merge_shards(&[a.clone(), a], &out).unwrap_err();
        assert!(e.to_string().contains("shard 1 ("), "{e}");
    }

    #[test]
    fn strong_reports_pool_stage_by_stage() {
        let report = |images: usize, broken: [usize; 2]| StrongReport {
            norm: crate::attack::Norm::L2,
            eps: 2.0,
            images,
            clean_accuracy: 1.0,
            robust_accuracy: (images - broken[0] - broken[1]) as f64 / images as f64,
            stages: ["APGD-CE", "Square"]
                .iter()
                .zip(broken)
                .scan(images, |left, (name, b)| {
                    let attempted = *left;
                    *left -= b;
                    Some(crate::attack::StrongStage {
                        attack: name.to_string(),
                        attempted,
                        broken: b,
                        robust_accuracy: *left as f64 / images as f64,
                        seconds: 1.0,
                    })
                })
                .collect(),
            adv: vec![],
            broken: vec![],
            broken_at: vec![],
            final_label: vec![],
        };
        let pooled = pool_strong(&[report(100, [10, 2]), report(300, [30, 0])]).unwrap();
        assert_eq!(pooled.len(), 1);
        let p = &pooled[0];
        assert_eq!(p.images, 400);
        assert!((p.robust_accuracy - 358.0 / 400.0).abs() < 1e-12);
        assert_eq!((p.stages[1].attempted, p.stages[1].broken), (360, 2));
        assert!((p.stages[0].robust_accuracy - 0.9).abs() < 1e-12);
        let mut other = report(100, [1, 1]);
        other.stages[1].attack = "FAB".into();
        assert!(pool_strong(&[report(100, [1, 1]), other]).is_err());
        // Attack runs: rates from the summed counts, sizes over the successful examples.
        let stats = |attempted: usize, succeeded: usize, l2: f64| AttackStats {
            attack: "PGD".into(),
            norm: crate::attack::Norm::L2,
            eps: Some(2.0),
            attempted,
            succeeded,
            success_rate: succeeded as f64 / attempted as f64,
            seconds: attempted as f64,
            seconds_per_image: 1.0,
            mean_l0: 0.0,
            mean_l1: 0.0,
            mean_l2: l2,
            mean_linf: 0.0,
            evaluations_per_image: 10.0,
            seed: 0,
            targeted: false,
        };
        let p = &pool_attack_stats(&[stats(100, 10, 1.0), stats(100, 30, 2.0)])[0];
        assert_eq!((p.attempted, p.succeeded), (200, 40));
        assert!((p.success_rate - 0.2).abs() < 1e-12 && (p.mean_l2 - 1.75).abs() < 1e-12);
    }

    #[test]
    fn shard_specs() {
        assert_eq!(parse_shard("1/4").unwrap(), (1, 4));
        for bad in ["4/4", "0/0", "x/2", "3", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
        let mine: Vec<usize> = (0..7).filter(|&k| in_shard(k, (1, 3))).collect();
        assert_eq!(mine, vec![1, 4]);
    }
}
