//! `defed serve`: protected classification over HTTP, for a gateway next to cameras.
//!
//! Endpoints: `POST /v1/classify` (one PNG/JPEG or JSON image), `POST /v1/classify/batch`
//! (JSON array or multipart), `GET /v1/model`, `GET /healthz`, `GET /readyz`, `GET /metrics`
//! (Prometheus). Requests wait in a bounded queue (503 when full) and are run in micro-batches
//! by one inference thread; see [`batcher`].
//!
//! With API keys configured, `/v1/*` and `/metrics` need `Authorization: Bearer <key>`; the
//! probes `/healthz` and `/readyz` stay open.
//!
//! Files by concern: this one holds the settings and the lifecycle (bind, run, shut down);
//! `auth` the API keys and their middleware; `routes` the handlers, answers and errors;
//! `batcher` the queue and the inference thread; `decode` the request bodies; `metrics` the
//! Prometheus counters; `client` a Rust client.

pub mod batcher;
pub mod client;
pub mod decode;
pub mod metrics;

mod auth;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::backend::Device;
use crate::defense::{Defender, Policy};
use crate::error::{Error, Result};
use auth::digest;
use batcher::{BatchOptions, Queue};
use metrics::Metrics;
use routes::{DenoiserInfo, ModelInfo, router};

pub use auth::read_api_keys;

/// Service settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Accepted API keys; empty means no authentication.
    pub api_keys: Vec<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// How long a request may wait for its verdicts.
    pub timeout: Duration,
    /// Requests that may wait for inference; more get 503.
    pub queue_capacity: usize,
    /// Images per inference batch.
    pub max_batch: usize,
    /// How long a batch waits for more requests.
    pub batch_window: Duration,
    /// Most images in one batch request.
    pub max_images_per_request: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_keys: vec![],
            body_limit: 4 << 20,
            timeout: Duration::from_secs(10),
            queue_capacity: 256,
            max_batch: 64,
            batch_window: Duration::from_millis(2),
            max_images_per_request: 256,
        }
    }
}

struct Shared {
    cfg: ServeConfig,
    queue: Queue,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    shape: [usize; 3],
    policy: Policy,
    names: Vec<String>,
    thresholds: Vec<f32>,
    info: ModelInfo,
    key_digests: Vec<[u8; 32]>,
}

type AppState = Arc<Shared>;

/// A bound, not yet running, service.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
    worker: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish()
    }
}

impl Server {
    /// Checks the defender (calibrated, runs on a test batch), starts the inference thread and
    /// binds the address.
    pub async fn bind(defender: Defender, device: Device, cfg: ServeConfig) -> Result<Server> {
        let thresholds = defender.thresholds.clone().ok_or_else(|| {
            Error::Invalid(
                "the bundle has no thresholds: calibrate it first (`defed calibrate`)".into(),
            )
        })?;
        if cfg.max_batch == 0 || cfg.max_images_per_request == 0 || cfg.queue_capacity == 0 {
            return Err(Error::Invalid(
                "batch size, images per request and queue capacity must be positive".into(),
            ));
        }
        let shape = defender.input_shape();
        let policy = defender.policy;
        // A warm-up batch: finds a broken bundle before the first client does, and makes the
        // first request's latency the steady one.
        defender.defend(&vec![0.0; shape.iter().product()], &device)?;
        let names: Vec<String> = defender.denoisers.iter().map(|d| d.name.clone()).collect();
        let info = ModelInfo {
            defed_version: env!("CARGO_PKG_VERSION"),
            classifier: defender.classifier.architecture().to_string(),
            input_shape: shape,
            classes: defender.classifier.num_classes(),
            alpha: defender.alpha,
            policy: defender.policy,
            rule: "adversarial if any score exceeds its threshold; a flagged image gets the argmax of the summed softmax of the flagging denoisers' outputs",
            denoisers: defender
                .denoisers
                .iter()
                .zip(&thresholds)
                .map(|(d, &t)| DenoiserInfo {
                    name: d.name.clone(),
                    architecture: d.meta.architecture.to_string(),
                    edge: d.meta.edge.map(|e| e.to_string()),
                    noise: d.meta.noise,
                    threshold: t,
                })
                .collect(),
            calibration: defender.calibration.as_ref().map(|c| {
                serde_json::json!({
                    "method": c.method,
                    "k": c.k,
                    "fpr": c.fpr,
                    "images": c.images,
                    "source": c.source,
                    "mean": c.mean,
                    "std": c.std,
                    "calibration_flag_rate": c.calibration_flag_rate,
                })
            }),
            max_images_per_request: cfg.max_images_per_request,
            max_batch: cfg.max_batch,
        };
        let metrics = Arc::new(Metrics::default());
        let (queue, worker) = batcher::start(
            defender,
            device,
            BatchOptions {
                capacity: cfg.queue_capacity,
                max_batch: cfg.max_batch,
                window: cfg.batch_window,
            },
            metrics.clone(),
        )
        .map_err(|e| Error::Invalid(format!("cannot start the inference thread: {e}")))?;
        let listener = tokio::net::TcpListener::bind(cfg.addr)
            .await
            .map_err(|e| Error::Invalid(format!("cannot listen on {}: {e}", cfg.addr)))?;
        let key_digests = cfg.api_keys.iter().map(|k| digest(k)).collect();
        let state = Arc::new(Shared {
            cfg,
            queue,
            metrics,
            ready: AtomicBool::new(true),
            shape,
            policy,
            names,
            thresholds,
            info,
            key_digests,
        });
        Ok(Server {
            listener,
            state,
            worker,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::Invalid(format!("no local address: {e}")))
    }

    /// Serves until `shutdown` completes, then stops taking connections, finishes the requests
    /// in flight and the queued inference, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let state = self.state.clone();
        let app = router(self.state);
        let addr = self.listener.local_addr().ok();
        tracing::info!(?addr, "serving");
        let st = state.clone();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                st.ready.store(false, Ordering::SeqCst);
                tracing::info!("shutdown requested: finishing requests in flight");
            })
            .await;
        // The last queue handle goes with the state; the inference thread then drains and ends.
        drop(state);
        let worker = self.worker;
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        tracing::info!("stopped");
        result.map_err(|e| Error::Invalid(format!("server error: {e}")))
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
