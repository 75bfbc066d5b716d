use std::path::PathBuf;

use std::io::Write;

use anyhow::Result;
use defed::model::checkpoint::{FileFormat, LoadOptions, read_checkpoint, resolve_meta};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A checkpoint: defed safetensors, or an original `.pth` / safetensors file.
    checkpoint: PathBuf,
    /// Print the metadata and tensor list as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let raw = read_checkpoint(&a.checkpoint)?;
    let meta = resolve_meta(&a.checkpoint, &raw, &LoadOptions::default());
    let params: usize = raw.tensors.values().map(|t| t.data.len()).sum();
    if a.json {
        let tensors: Vec<_> = raw
            .tensors
            .iter()
            .map(|(k, t)| serde_json::json!({"name": k, "shape": t.shape}))
            .collect();
        let v = serde_json::json!({
            "file": a.checkpoint,
            "format": format!("{:?}", raw.format).to_lowercase(),
            "metadata": meta.as_ref().ok(),
            "metadata_error": meta.as_ref().err().map(|e| e.to_string()),
            "stored_metadata": raw.meta.is_some(),
            "parameters": params,
            "tensors": tensors,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "file          {}", a.checkpoint.display())?;
    writeln!(
        out,
        "format        {}",
        match raw.format {
            FileFormat::Safetensors => "safetensors",
            FileFormat::Pytorch => "PyTorch state_dict (.pth)",
        }
    )?;
    match &meta {
        Ok(m) => {
            let how = if raw.meta.is_some() {
                ""
            } else {
                " (inferred from tensor and file names)"
            };
            writeln!(out, "architecture  {}{how}", m.architecture)?;
            writeln!(out, "channels      {}", m.channels)?;
            if let Some(e) = m.edge {
                writeln!(out, "edge          {e}")?;
            }
            if let Some(n) = m.noise {
                writeln!(out, "noise sigma   {n}")?;
            }
            if let Some(al) = m.alpha {
                writeln!(out, "alpha         {al}")?;
            }
            if let Some(d) = &m.dataset {
                writeln!(out, "dataset       {d}")?;
            }
            if let Some(s) = &m.source {
                writeln!(out, "source        {s}")?;
            }
            for (k, v) in &m.metrics {
                writeln!(out, "metric        {k} = {v}")?;
            }
            writeln!(out, "defed version {}", m.defed_version)?;
        }
        Err(e) => writeln!(out, "architecture  unknown: {e}")?,
    }
    writeln!(out, "parameters    {params}")?;
    writeln!(out, "tensors       {}", raw.tensors.len())?;
    for (k, t) in &raw.tensors {
        writeln!(out, "  {k:<40} {:?}", t.shape)?;
    }
    if !raw.skipped.is_empty() {
        writeln!(
            out,
            "skipped       {} non-float tensors (e.g. {})",
            raw.skipped.len(),
            raw.skipped[0]
        )?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// A checkpoint: defed safetensors, or an original `.pth` / safetensors file.
    input: PathBuf,
    /// The defed safetensors file to write.
    output: PathBuf,
    /// Store the weights as float16 (half the size).
    #[arg(long)]
    half: bool,
    /// Edge detector, for an original Defed file whose name says neither.
    #[arg(long)]
    edge: Option<defed::model::EdgeMethod>,
}

/// Rewrites a checkpoint as defed safetensors (metadata included), optionally in float16, and
/// reports the largest change to any weight.
pub fn convert(a: ConvertArgs) -> Result<()> {
    use anyhow::Context;
    let raw = read_checkpoint(&a.input)?;
    let opts = LoadOptions {
        edge: a.edge,
        ..Default::default()
    };
    let meta = resolve_meta(&a.input, &raw, &opts)?;
    let bytes = defed::model::checkpoint::raw_to_bytes(&raw, &meta, a.half)?;
    let back = defed::model::checkpoint::read_checkpoint_bytes("converted", &bytes)?;
    let max_change = raw
        .tensors
        .iter()
        .flat_map(|(k, t)| {
            t.data
                .iter()
                .zip(&back.tensors[k].data)
                .map(|(x, y)| (x - y).abs())
        })
        .fold(0f32, f32::max);
    defed::util::write_atomic(&a.output, &bytes)
        .with_context(|| format!("writing {}", a.output.display()))?;
    println!(
        "{} -> {} ({} bytes, {}); largest weight change {max_change:.3e}",
        a.input.display(),
        a.output.display(),
        bytes.len(),
        if a.half { "float16" } else { "float32" }
    );
    Ok(())
}
