use std::path::PathBuf;

use anyhow::Result;
use defed::data::download::{default_cache_dir, download_with, source};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Download a data set into the cache, checking its published checksums (SHA-256; MD5 for
    /// SVHN, whose page gives nothing stronger).
    Download {
        /// mnist, fashion-mnist, cifar10 or svhn.
        name: String,
        /// SVHN: also the 531,131 extra digits (1.3 GB).
        #[arg(long)]
        extra: bool,
        /// Cache folder (default: $DEFED_CACHE_DIR, else the user's cache folder + defed).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Base address to fetch the files from instead of the standard mirrors.
        #[arg(long, env = "DEFED_MIRROR")]
        mirror: Option<String>,
    },
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Download {
            name,
            extra,
            cache_dir,
            mirror,
        } => {
            let src = source(&name)?;
            let cache = cache_dir.unwrap_or_else(default_cache_dir);
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!("downloading {} into {}", src.name, cache.display()));
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            if extra && !src.files.iter().any(|f| f.optional) {
                anyhow::bail!("--extra: {} has no optional files", src.name);
            }
            let result = download_with(&src, &cache, mirror.as_deref(), extra);
            bar.finish_and_clear();
            let dir = result?;
            println!("{} is in {}", src.name, dir.display());
            Ok(())
        }
    }
}
