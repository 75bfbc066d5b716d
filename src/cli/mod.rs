//! Command definitions and dispatch.

mod attack;
mod bench;
mod classify;
mod data;
mod defense;
mod inspect;
mod pipeline;
mod serve;
mod train;

use clap::{Parser, Subcommand};

/// defed: protect image classifiers from adversarial examples with edge-feature-enhanced
/// denoisers.
#[derive(Debug, Parser)]
#[command(name = "defed", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Compute device: cpu (default), or cuda[:N], wgpu, vulkan in builds with that cargo feature.
    #[arg(long, global = true, env = "DEFED_DEVICE", default_value = "cpu")]
    pub device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run stages 1-5 on the embedded data and write a report (the main job).
    Pipeline(pipeline::Args),
    /// Show a checkpoint's architecture, metadata, parameter count and tensors.
    Inspect(inspect::Args),
    /// Rewrite a checkpoint (defed or original) as defed safetensors, optionally float16.
    Convert(inspect::ConvertArgs),
    /// Classify images (IDX, PNG/JPEG, .npy, or a named data set) with a classifier.
    Classify(classify::Args),
    /// Stage 1: keep the first N test images the classifier gets right.
    Benign(attack::BenignArgs),
    /// Stage 2: craft adversarial examples against a classifier.
    Attack(attack::AttackArgs),
    /// Stage 5: put a classifier and denoisers into one defender bundle.
    Bundle(defense::BundleArgs),
    /// Stage 5: set a bundle's thresholds on benign images.
    Calibrate(defense::CalibrateArgs),
    /// Stage 5: verdict, label and scores for images.
    Defend(defense::DefendArgs),
    /// Stage 5: evaluate denoiser sets and thresholds against benign and adversarial images.
    Evaluate(defense::EvaluateArgs),
    /// Redraw a report folder's figures from its figures.json and rewrite its index.html
    /// (no recomputation).
    Report(ReportArgs),
    /// Train classifiers and denoisers.
    Train {
        #[command(subcommand)]
        command: train::Command,
    },
    /// Accuracy, PSNR and SSIM of a denoiser on noisy test images.
    DenoiseQuality(classify::QualityArgs),
    /// Serve a defender bundle over HTTP (protected classification for a gateway).
    Serve(serve::ServeArgs),
    /// Talk to a running `defed serve`: classify files, show the model, load-test.
    Client {
        #[command(subcommand)]
        command: serve::ClientCommand,
    },
    /// Time the performance workloads (training step, inference, input gradient, defender
    /// latency) on the selected device.
    Bench(bench::Args),
    /// Merge the output folders of sharded runs (`--shard i/n`) or of image chunks (the same
    /// attacks on other images) into one folder and report, pooling the chunks' figures.
    Merge(MergeArgs),
    /// Data sets: download and cache.
    Data {
        #[command(subcommand)]
        command: data::Command,
    },
}

/// `defed merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The shards' or chunks' output folders (e.g. results/shard-*).
    #[arg(required = true)]
    shards: Vec<std::path::PathBuf>,
    /// Folder for the merged tables, files and merged.md.
    #[arg(long)]
    out: std::path::PathBuf,
}

fn merge(a: MergeArgs) -> anyhow::Result<()> {
    let s = defed::eval::merge::merge_shards(&a.shards, &a.out)?;
    let tables: Vec<String> = s
        .tables
        .iter()
        .map(|(k, v)| format!("{k} ({v} rows)"))
        .collect();
    println!(
        "merged {} shards into {}: {}; {} files copied, {} training runs; report {}",
        s.shards,
        a.out.display(),
        if tables.is_empty() {
            "no tables".to_string()
        } else {
            tables.join(", ")
        },
        s.copied,
        s.training_runs.len(),
        a.out.join("merged.md").display()
    );
    if s.per_shard > 0 {
        println!(
            "{} files of one name with other contents kept per chunk in shard-K/",
            s.per_shard
        );
    }
    if s.chunked {
        println!("image chunks, pooled over all their images:");
        for line in &s.pooled {
            println!("  {line}");
        }
    }
    Ok(())
}

/// `defed report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A folder written by `defed pipeline`, `defed evaluate` or `defed merge` (holding
    /// report.md, adaptive.md or merged.md).
    dir: std::path::PathBuf,
}

fn report(a: ReportArgs) -> anyhow::Result<()> {
    let (page, figures) = defed::eval::html::rebuild(&a.dir)?;
    println!("{} ({figures} figures redrawn)", page.display());
    Ok(())
}

/// Sets up `tracing` logs on stderr.
pub fn init_tracing(verbose: u8, quiet: bool) {
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEFED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("defed={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let spec: defed::DeviceSpec = cli.device.parse()?;
    defed::set_default_device(spec)?;
    if spec != defed::DeviceSpec::Cpu {
        tracing::info!(device = %spec, "compute device");
    }
    match cli.command {
        Command::Pipeline(a) => pipeline::run_cmd(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Convert(a) => inspect::convert(a),
        Command::Bench(a) => bench::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Benign(a) => attack::benign(a),
        Command::Attack(a) => attack::attack(a),
        Command::Bundle(a) => defense::bundle(a),
        Command::Calibrate(a) => defense::calibrate(a),
        Command::Defend(a) => defense::defend(a),
        Command::Evaluate(a) => defense::evaluate_cmd(a),
        Command::Report(a) => report(a),
        Command::Merge(a) => merge(a),
        Command::Train { command } => train::run(command),
        Command::DenoiseQuality(a) => classify::quality(a),
        Command::Serve(a) => serve::serve(a),
        Command::Client { command } => serve::client(command),
        Command::Data { command } => data::run(command),
    }
}
