//! `defed serve`: protected classification over HTTP, for a gateway next to cameras.
//!
//! Endpoints: `POST /v1/classify` (one PNG/JPEG or JSON image), `POST /v1/classify/batch`
//! (JSON array or multipart), `GET /v1/model`, `GET /healthz`, `GET /readyz`, `GET /metrics`
//! (Prometheus). Requests wait in a bounded queue (503 when full) and are run in micro-batches
//! by one inference thread; see `serve::batcher`.
//!
//! With API keys configured, `/v1/*` and `/metrics` need `Authorization: Bearer <key>`; the
//! probes `/healthz` and `/readyz` stay open.
//!
//! Files by concern: this one holds the settings and the lifecycle (bind, run, shut down);
//! `auth` the API keys and their middleware; `routes` the handlers, answers and errors;
//! `conn` one connection's timeouts; `batcher` the queue and the inference thread; `decode` the request bodies; `metrics` the
//! Prometheus counters; `client` a Rust client.

pub(crate) mod batcher;
pub mod client;
pub mod decode;
pub(crate) mod metrics;

mod auth;
mod conn;
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
    /// Time a client has to send a request's head, from the connection's opening or the end of
    /// the previous response on a kept-alive connection.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once its head has arrived.
    pub body_timeout: Duration,
    /// A connection on which nothing is read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// After shutdown is asked for, how long requests in flight may take before the remaining
    /// connections are dropped.
    pub shutdown_deadline: Duration,
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
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            shutdown_deadline: Duration::from_secs(15),
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
    started: std::time::Instant,
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
        if cfg.max_batch == 0
            || cfg.max_images_per_request == 0
            || cfg.queue_capacity == 0
            || cfg.max_connections == 0
        {
            return Err(Error::Invalid(
                "batch size, images per request, queue capacity and connection limit must be positive".into(),
            ));
        }
        if cfg.header_timeout.is_zero() || cfg.body_timeout.is_zero() {
            return Err(Error::Invalid(
                "the header and body timeouts must be positive".into(),
            ));
        }
        if cfg.idle_timeout <= cfg.timeout {
            return Err(Error::Invalid(format!(
                "the idle timeout ({} ms) must be longer than the request timeout ({} ms): a request waiting for inference is idle",
                cfg.idle_timeout.as_millis(),
                cfg.timeout.as_millis()
            )));
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
            started: std::time::Instant::now(),
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

    /// Serves until `shutdown` completes, then stops taking connections, lets the requests in
    /// flight finish (for at most `shutdown_deadline`, after which the remaining connections
    /// are dropped), drains the queued inference, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server {
            listener,
            state,
            worker,
        } = self;
        let app = router(state.clone());
        let cfg = state.cfg.clone();
        tracing::info!(addr = ?listener.local_addr().ok(), "serving");
        let permits = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut conns = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            // A permit first: past the cap, clients wait in the listen backlog.
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let (stream, _peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors, or a connection reset before it was accepted:
                        // wait a little instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            while conns.try_join_next().is_some() {}
            conns.spawn(conn::serve(
                stream,
                app.clone(),
                cfg.clone(),
                stop_rx.clone(),
                permit,
            ));
        }
        state.ready.store(false, Ordering::SeqCst);
        drop(listener);
        tracing::info!(
            connections = conns.len(),
            "shutdown requested: finishing requests in flight"
        );
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(cfg.shutdown_deadline, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = conns.len(),
                deadline_ms = cfg.shutdown_deadline.as_millis() as u64,
                "dropping the connections still open at the shutdown deadline"
            );
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
        // The last queue handle goes with the state; the inference thread then drains and ends.
        drop(app);
        drop(state);
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        tracing::info!("stopped");
        Ok(())
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
