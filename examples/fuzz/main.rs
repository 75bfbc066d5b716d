//! Fuzzes defed's readers of untrusted input (IDX, `.npy`, `.npz`, safetensors, PNG/JPEG
//! request bodies, JSON request bodies) with seeded mutations, on the stable toolchain.
//!
//! ```sh
//! cargo run --release --example fuzz -- --seconds 600            # every target, 10 min each
//! cargo run --release --example fuzz -- --target npz --seconds 60 --seed 3
//! ```
//!
//! Prints one JSON line per target (runs, accepted, refused, findings); inputs that made a
//! reader panic are written to `--out` (default `fuzz-findings/`) and the exit status is 1.

#[path = "targets.rs"]
mod targets;

use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let mut seconds = 10.0f64;
    let mut seed = 0u64;
    let mut only: Option<String> = None;
    let mut out = PathBuf::from("fuzz-findings");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match a.as_str() {
            "--seconds" => seconds = value().parse().unwrap_or(seconds),
            "--seed" => seed = value().parse().unwrap_or(seed),
            "--target" => only = Some(value()),
            "--out" => out = PathBuf::from(value()),
            other => {
                eprintln!(
                    "unknown argument {other}; use --seconds S --seed N --target NAME --out DIR"
                );
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let all = targets::targets();
    let names: Vec<&str> = all.iter().map(|t| t.name).collect();
    if let Some(o) = &only
        && !names.contains(&o.as_str())
    {
        eprintln!("no target {o}; targets: {}", names.join(", "));
        return std::process::ExitCode::FAILURE;
    }
    let mut found = false;
    for t in all
        .iter()
        .filter(|t| only.as_deref().is_none_or(|o| o == t.name))
    {
        let r = targets::fuzz(t, seconds, seed);
        for (i, (msg, input)) in r.findings.iter().enumerate() {
            found = true;
            let _ = std::fs::create_dir_all(&out);
            let p = out.join(format!("{}-{seed}-{i}.bin", t.name));
            let _ = std::fs::write(&p, input);
            eprintln!("{}: panic {msg:?}; input in {}", t.name, p.display());
        }
        println!(
            "{}",
            serde_json::json!({
                "target": t.name,
                "seed": seed,
                "seconds": (r.seconds * 10.0).round() / 10.0,
                "runs": r.runs,
                "runs_per_second": (r.runs as f64 / r.seconds).round(),
                "accepted": r.accepted,
                "refused": r.refused,
                "findings": r.findings.len(),
            })
        );
    }
    if found {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
