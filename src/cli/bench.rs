use std::path::PathBuf;

use anyhow::{Context, Result};
use defed::bench::Workloads;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds to time each workload (after one warm-up call).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Also write the measurements as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only these workloads (defed_train_step, defed_lenet_inference, lenet_input_gradient,
    /// defender_latency, madry_pgd10_train_step); all by default.
    #[arg(long, num_args = 1..)]
    only: Vec<String>,
}

/// Times the performance workloads on the selected `--device`.
pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(
        a.seconds.is_finite() && a.seconds > 0.0,
        "--seconds must be a positive number"
    );
    for name in &a.only {
        anyhow::ensure!(
            Workloads::NAMES.contains(&name.as_str()),
            "unknown workload {name:?} (expected one of {})",
            Workloads::NAMES.join(", ")
        );
    }
    let device = defed::default_device();
    let mut w = Workloads::new(&device)?;
    let results = if a.only.is_empty() {
        w.measure_all(a.seconds)?
    } else {
        let names: Vec<&str> = a.only.iter().map(String::as_str).collect();
        w.measure(&names, a.seconds)?
    };
    println!(
        "{:24} {:>12} {:>12} {:>8}",
        "workload", "images/s", "ms/call", "calls"
    );
    for m in &results {
        println!(
            "{:24} {:>12.1} {:>12.2} {:>8}",
            m.name, m.images_per_second, m.ms_per_call, m.calls
        );
    }
    if let Some(path) = &a.json {
        let body = serde_json::to_vec_pretty(&serde_json::json!({
            "device": format!("{device:?}"),
            "threads": rayon::current_num_threads(),
            "workloads": results,
        }))?;
        defed::util::write_atomic(path, &body)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
