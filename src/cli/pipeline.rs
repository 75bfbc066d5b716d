use std::path::PathBuf;

use anyhow::Result;
use defed::pipeline::{DefenceReport, PipelineConfig, run};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Report folder.
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// Data instead of the embedded digits: svhn, cifar10, mnist, fashion-mnist (their test
    /// split is evaluated; `defed data download NAME` first), or an .npz (x, y) or SVHN .mat
    /// file. Colour data need --classifier and --denoisers (e.g. the authors' SVHN models) or
    /// --train.
    #[arg(long)]
    dataset: Option<String>,
    /// Classifier epochs with --train.
    #[arg(long, default_value_t = 100)]
    classifier_epochs: usize,
    /// Retrain the classifier and the denoisers from scratch (about an hour on 2 cores)
    /// instead of using the embedded models.
    #[arg(long)]
    train: bool,
    /// Use this classifier instead of the embedded one.
    #[arg(long, conflicts_with = "train")]
    classifier: Option<PathBuf>,
    /// Use these denoisers instead of the embedded ones.
    #[arg(long, num_args = 1.., conflicts_with = "train")]
    denoisers: Vec<PathBuf>,
    /// Denoiser epochs with --train.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Benign images kept.
    #[arg(long, default_value_t = 600)]
    benign: usize,
    /// Of which the first ones calibrate.
    #[arg(long, default_value_t = 300)]
    calibration: usize,
    /// Held-out benign images attacked.
    #[arg(long, default_value_t = 100)]
    attacked: usize,
    /// Held-out images the adaptive white-box attack runs on (Linf 0.3, L2 2); 0 skips it.
    #[arg(long, default_value_t = 10)]
    adaptive: usize,
    /// Skip the robust defender (adversarially trained classifier + denoisers) that runs
    /// beside the paper's.
    #[arg(long)]
    no_robust: bool,
    /// The robust defender's classifier (default: the embedded TRADES-trained Madry CNN).
    #[arg(long)]
    robust_classifier: Option<PathBuf>,
    /// The robust defender's denoisers (default: the embedded ones).
    #[arg(long, num_args = 1..)]
    robust_denoisers: Vec<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run_cmd(a: Args) -> Result<()> {
    let cfg = PipelineConfig {
        out: a.out,
        dataset: a.dataset,
        classifier_epochs: a.classifier_epochs,
        classifier: a.classifier,
        denoisers: a.denoisers,
        train: a.train,
        denoiser_epochs: a.epochs,
        benign: a.benign,
        calibration: a.calibration,
        attacked: a.attacked,
        adaptive: a.adaptive,
        robust: !a.no_robust,
        robust_classifier: a.robust_classifier,
        robust_denoisers: a.robust_denoisers,
        seed: a.seed,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..PipelineConfig::default()
    };
    let report = run(&cfg)?;
    println!(
        "report: {} (and {})",
        report.out.join("index.html").display(),
        report.out.join("report.md").display()
    );
    print_defence("the paper's defender", &report.paper);
    if let Some(r) = &report.robust {
        print_defence("the robust defender (robust/)", r);
    }
    Ok(())
}

fn print_defence(title: &str, r: &DefenceReport) {
    println!("{title}: classifier {}", r.classifier_source);
    println!(
        "classifier accuracy on held-out images: {:.2}%",
        100.0 * r.classifier_accuracy
    );
    for s in &r.attacks {
        println!(
            "  {:<22} success {:>5.1}%",
            s.attack,
            100.0 * s.success_rate
        );
    }
    if let Some(h) = &r.headline {
        println!(
            "defender ({}, k=2): {:.1}% of held-out benign images pass",
            h.set,
            100.0 * h.benign_pass
        );
        for a in &h.attacks {
            println!(
                "  {:<22} detected {:>5.1}%  correct label {:>5.1}%  AUC {:.3}",
                a.attack,
                100.0 * a.detection,
                100.0 * a.accuracy,
                a.auc
            );
        }
    }
    for row in &r.adaptive {
        let (reject, correct) = row.robust_accuracy();
        println!(
            "  adaptive {} {:<4} robust accuracy {:>5.1}% (reject) {:>5.1}% (correct), worst case with the transfer",
            row.adaptive.norm.name(),
            row.adaptive.eps,
            100.0 * reject,
            100.0 * correct
        );
    }
}
