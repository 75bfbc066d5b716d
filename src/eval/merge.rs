//! Merging the outputs of sharded runs (`--shard i/n` on several machines or job-array tasks,
//! each writing its own folder) into one folder and one report.
//!
//! Tables are concatenated: `summary.csv` / `summary.json` of attack runs, `strong.csv` /
//! `strong.json` of the strong suite, `results.csv` / `results.json` of evaluations,
//! `adaptive.csv` / `adaptive.json` of adaptive evaluations; the shards' headers must agree.
//! Every other file (adversarial sets, checkpoints, training logs, figures) is copied; a name
//! present in two shards must hold the same bytes. `merged.md` lists the shards, the attack
//! runs and the training runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::util::{read_file, write_atomic};

/// Tables merged row by row: (CSV, JSON array) file names.
const TABLES: [(&str, &str); 4] = [
    ("summary.csv", "summary.json"),
    ("strong.csv", "strong.json"),
    ("results.csv", "results.json"),
    ("adaptive.csv", "adaptive.json"),
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
    // name -> (shard, path) of the files to copy.
    let mut files: BTreeMap<String, (usize, PathBuf)> = BTreeMap::new();
    let mut csv: BTreeMap<&str, (String, Vec<String>)> = BTreeMap::new();
    let mut json: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for (k, dir) in shards.iter().enumerate() {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "shard {k}: {} is not a folder",
                dir.display()
            )));
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            let path = e.path();
            if name.starts_with('.') || name == "merged.md" {
                continue;
            }
            if let Some((c, _)) = TABLES.iter().find(|(c, _)| *c == name) {
                let text = String::from_utf8(read_file(&path)?)
                    .map_err(|_| Error::format(&path, "not UTF-8 text"))?;
                let mut lines = text.lines();
                let header = lines.next().unwrap_or("").to_string();
                let slot = csv.entry(c).or_insert_with(|| (header.clone(), Vec::new()));
                if slot.0 != header {
                    return Err(Error::format(
                        &path,
                        format!(
                            "its columns differ from the other shards' {c}: {header:?} vs {:?}",
                            slot.0
                        ),
                    ));
                }
                for l in lines.filter(|l| !l.trim().is_empty()) {
                    if !slot.1.iter().any(|x| x == l) {
                        slot.1.push(l.to_string());
                    }
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
                    if !slot.contains(&r) {
                        slot.push(r);
                    }
                }
                continue;
            }
            match files.get(&name) {
                Some((other, first)) => {
                    if read_file(first)? != read_file(&path)? {
                        return Err(Error::Invalid(format!(
                            "{name} differs between shard {other} ({}) and shard {k} ({}): the shards overlap",
                            first.display(),
                            path.display()
                        )));
                    }
                }
                None => {
                    files.insert(name, (k, path));
                }
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for (name, (_, path)) in &files {
        write_atomic(out.join(name), &read_file(path)?)?;
        summary.copied += 1;
        if let Some(run) = name.strip_suffix(".log.json") {
            summary.training_runs.push(run.to_string());
        }
    }
    for (name, (header, rows)) in &csv {
        let mut text = format!("{header}\n");
        for r in rows {
            text.push_str(r);
            text.push('\n');
        }
        write_atomic(out.join(name), text.as_bytes())?;
        summary.tables.insert(name.to_string(), rows.len());
    }
    for (name, rows) in &json {
        write_atomic(
            out.join(name),
            &serde_json::to_vec_pretty(rows).expect("JSON values serialise"),
        )?;
    }
    write_atomic(
        out.join("merged.md"),
        report(shards, out, &summary)?.as_bytes(),
    )?;
    Ok(summary)
}

/// The merged report: shards, tables, attack runs and training runs.
fn report(shards: &[PathBuf], out: &Path, s: &MergeSummary) -> Result<String> {
    let mut md = String::from("# Merged shards\n\n");
    for (k, d) in shards.iter().enumerate() {
        md += &format!("- shard {k}: `{}`\n", d.display());
    }
    md += &format!("\n{} files copied.\n", s.copied);
    for (name, rows) in &s.tables {
        md += &format!("- `{name}`: {rows} rows\n");
    }
    if let Ok(bytes) = std::fs::read(out.join("summary.json"))
        && let Ok(serde_json::Value::Array(rows)) = serde_json::from_slice(&bytes)
    {
        md += "\n## Attacks\n\n| attack | norm | eps | attempted | succeeded | success rate | s / image |\n|---|---|---|---|---|---|---|\n";
        for r in &rows {
            md += &format!(
                "| {} | {} | {} | {} | {} | {:.2}% | {:.4} |\n",
                r["attack"].as_str().unwrap_or("?"),
                r["norm"].as_str().unwrap_or("?"),
                r["eps"].as_f64().map(|e| e.to_string()).unwrap_or_default(),
                r["attempted"],
                r["succeeded"],
                100.0 * r["success_rate"].as_f64().unwrap_or(f64::NAN),
                r["seconds_per_image"].as_f64().unwrap_or(f64::NAN),
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
