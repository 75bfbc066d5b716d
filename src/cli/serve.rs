use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use defed::defense::Defender;
use defed::serve::client::{Client, LoadRequest, load_test};
use defed::serve::{ServeConfig, Server, read_api_keys, shutdown_signal};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A calibrated defender bundle (`defed bundle` + `defed calibrate`, or the pipeline's
    /// `defender.safetensors`).
    #[arg(long)]
    bundle: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// File of accepted API keys, one per line; without it the service is open.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Largest request body, in KiB.
    #[arg(long, default_value_t = 4096)]
    body_limit_kib: usize,
    /// Per-request timeout, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Requests that may wait for inference; more get 503.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Images per inference batch.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// How long a batch waits for more requests, in milliseconds.
    #[arg(long, default_value_t = 2.0)]
    batch_window_ms: f64,
    /// Most images in one batch request.
    #[arg(long, default_value_t = 256)]
    max_images: usize,
    /// Seconds a client has to send a request's head (also the keep-alive wait between
    /// requests).
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a client has to send a request's body.
    #[arg(long, default_value_t = 10.0)]
    body_timeout: f64,
    /// Seconds without a byte in either direction after which a connection is closed.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Most connections at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Seconds requests in flight get after SIGTERM before their connections are dropped.
    #[arg(long, default_value_t = 15.0)]
    shutdown_deadline: f64,
}

fn seconds(name: &str, v: f64) -> Result<Duration> {
    if !(v > 0.0 && v <= 86_400.0) {
        bail!("--{name} must be between 0 and 86400 seconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let device = defed::default_device();
    let defender = Defender::load(&a.bundle, &device)?;
    let api_keys = match &a.api_key_file {
        Some(p) => read_api_keys(p)?,
        None => {
            tracing::warn!("no --api-key-file: the service accepts any client");
            vec![]
        }
    };
    if !(0.0..=1000.0).contains(&a.batch_window_ms) {
        bail!("--batch-window-ms must be between 0 and 1000");
    }
    let cfg = ServeConfig {
        addr: a.addr,
        api_keys,
        body_limit: a.body_limit_kib.saturating_mul(1024),
        timeout: Duration::from_millis(a.timeout_ms),
        queue_capacity: a.queue,
        max_batch: a.max_batch,
        batch_window: Duration::from_secs_f64(a.batch_window_ms / 1e3),
        max_images_per_request: a.max_images,
        header_timeout: seconds("header-timeout", a.header_timeout)?,
        body_timeout: seconds("body-timeout", a.body_timeout)?,
        idle_timeout: seconds("idle-timeout", a.idle_timeout)?,
        max_connections: a.max_connections,
        shutdown_deadline: seconds("shutdown-deadline", a.shutdown_deadline)?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("defed-http")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let server = Server::bind(defender, device, cfg).await?;
        let addr = server.local_addr()?;
        eprintln!(
            "defed serve: listening on http://{addr} (POST /v1/classify, /v1/classify/batch; GET /v1/model, /healthz, /readyz, /metrics); Ctrl-C or SIGTERM stops"
        );
        server.run(shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Classify PNG/JPEG files (one request each) or `.npy` arrays (one batch request each).
    Classify {
        /// Image files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check a service's liveness (`GET /healthz`); exits 0 when it answers 200. For container
    /// health checks, without curl in the image.
    Health {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show what the service has loaded.
    Model {
        #[command(flatten)]
        conn: Conn,
    },
    /// Load-test a service: concurrent clients send an image for a while; prints requests/s
    /// and latency percentiles as JSON.
    Load {
        /// The image to send (PNG or JPEG); by default an embedded test digit as JSON.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, clap::Args)]
pub struct Conn {
    /// The service's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key (or set DEFED_API_KEY).
    #[arg(long, env = "DEFED_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

impl Conn {
    fn client(&self) -> Result<Client> {
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            bail!("--timeout must be positive");
        }
        Ok(Client::new(
            &self.url,
            self.api_key.clone(),
            Duration::from_secs_f64(self.timeout),
        ))
    }
}

fn print_reply(r: defed::serve::client::Reply) -> Result<()> {
    let pretty = serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(r.body);
    if !(200..300).contains(&r.status) {
        bail!("HTTP {}: {pretty}", r.status);
    }
    println!("{pretty}");
    Ok(())
}

pub fn client(c: ClientCommand) -> Result<()> {
    match c {
        ClientCommand::Classify { files, conn } => {
            let client = conn.client()?;
            for f in files {
                let r = client.classify_file(&f)?;
                eprintln!("{}:", f.display());
                print_reply(r)?;
            }
            Ok(())
        }
        ClientCommand::Model { conn } => print_reply(conn.client()?.get("/v1/model")?),
        ClientCommand::Health { conn } => {
            let r = conn.client()?.get("/healthz")?;
            if r.status != 200 {
                bail!("HTTP {}: {}", r.status, r.body.trim());
            }
            println!("{}", r.body.trim());
            Ok(())
        }
        ClientCommand::Load {
            image,
            concurrency,
            seconds,
            conn,
        } => {
            if !(seconds > 0.0 && seconds.is_finite()) {
                bail!("--seconds must be positive");
            }
            let req = match image {
                Some(p) => {
                    let body =
                        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                    let ct = if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
                        "image/png"
                    } else {
                        "image/jpeg"
                    };
                    LoadRequest {
                        path: "/v1/classify".into(),
                        content_type: ct.into(),
                        body,
                    }
                }
                None => {
                    let d = defed::data::embedded_mnist();
                    LoadRequest {
                        path: "/v1/classify".into(),
                        content_type: "application/json".into(),
                        body: serde_json::to_vec(&serde_json::json!({
                            "pixels": d.image(0),
                            "shape": d.shape,
                        }))?,
                    }
                }
            };
            let client = conn.client()?;
            let report = load_test(
                &client,
                &[req],
                concurrency,
                Duration::from_secs_f64(seconds),
            );
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}
