//! `defed serve`: protected classification over HTTP, for a gateway next to cameras.
//!
//! Endpoints: `POST /v1/classify` (one PNG/JPEG or JSON image), `POST /v1/classify/batch`
//! (JSON array or multipart), `GET /v1/model`, `GET /healthz`, `GET /readyz`, `GET /metrics`
//! (Prometheus). Requests wait in a bounded queue (503 when full) and are run in micro-batches
//! by one inference thread; see [`batcher`].
//!
//! With API keys configured, `/v1/*` and `/metrics` need `Authorization: Bearer <key>`; the
//! probes `/healthz` and `/readyz` stay open.

pub mod batcher;
pub mod client;
pub mod decode;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::backend::Device;
use crate::defense::{Answer, Defender, Policy, Verdict};
use crate::error::{Error, Result};
use batcher::{BatchOptions, Job, Queue, SubmitError};
use metrics::{Endpoint, Metrics, Outcome};

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

/// Reads API keys from a file: one per line; blank lines and lines starting with `#` are
/// skipped. A file without any key is an error (it would silently disable authentication).
pub fn read_api_keys(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if keys.is_empty() {
        return Err(Error::format(path, "no API key in the file (one per line)"));
    }
    if let Some(k) = keys.iter().find(|k| k.len() < 16) {
        return Err(Error::format(
            path,
            format!(
                "API key of {} characters is too short to be secret; use at least 16",
                k.len()
            ),
        ));
    }
    Ok(keys)
}

/// A denoiser as `/v1/model` describes it.
#[derive(Debug, Clone, Serialize)]
struct DenoiserInfo {
    name: String,
    architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    edge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    noise: Option<f32>,
    threshold: f32,
}

/// What `/v1/model` answers.
#[derive(Debug, Clone, Serialize)]
struct ModelInfo {
    defed_version: &'static str,
    classifier: String,
    input_shape: [usize; 3],
    classes: usize,
    alpha: f32,
    policy: Policy,
    rule: &'static str,
    denoisers: Vec<DenoiserInfo>,
    calibration: Option<serde_json::Value>,
    max_images_per_request: usize,
    max_batch: usize,
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

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
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

fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/classify/batch", post(classify_batch))
        .route("/v1/model", get(model))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(protected)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(state.cfg.body_limit))
        .with_state(state)
}

/// An error answer: status, JSON `{"error": ...}`, and how it is counted.
struct ApiError {
    status: StatusCode,
    outcome: Outcome,
    msg: String,
}

impl ApiError {
    fn new(status: StatusCode, outcome: Outcome, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            outcome,
            msg: msg.into(),
        }
    }

    fn bad(e: Error) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, Outcome::BadRequest, e.to_string())
    }

    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.msg })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"defed\""),
            );
        }
        r
    }
}

fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::PayloadTooLarge,
            "request body over the service's limit",
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Outcome::BadRequest,
            format!("cannot read the body: {e}"),
        )
    }
}

async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if st.key_digests.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| digest(k.trim()));
    // Compare digests in full for every key, so timing says nothing about a key's prefix.
    let ok = given.is_some_and(|g| {
        st.key_digests.iter().fold(false, |acc, d| {
            acc | (d.iter().zip(&g).fold(0u8, |x, (a, b)| x | (a ^ b)) == 0)
        })
    });
    if ok {
        return next.run(req).await;
    }
    if let Some(e) = Endpoint::from_path(req.uri().path()) {
        st.metrics.request(e, Outcome::Unauthorized);
    }
    tracing::warn!(path = %req.uri().path(), "refused: missing or invalid API key");
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        Outcome::Unauthorized,
        "missing or invalid API key: send `Authorization: Bearer <key>`",
    )
    .into_response()
}

async fn readyz(State(st): State<AppState>) -> Response {
    if st.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn model(State(st): State<AppState>) -> Response {
    st.metrics.request(Endpoint::Model, Outcome::Ok);
    axum::Json(&st.info).into_response()
}

async fn metrics_text(State(st): State<AppState>) -> Response {
    st.metrics.request(Endpoint::Metrics, Outcome::Ok);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        st.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Serialize)]
struct ClassifyOut {
    #[serde(flatten)]
    verdict: Answer,
    thresholds: Vec<f32>,
    latency_ms: f64,
}

#[derive(Debug, Serialize)]
struct BatchOut {
    results: Vec<Answer>,
    denoisers: Vec<String>,
    thresholds: Vec<f32>,
    latency_ms: f64,
}

enum Kind {
    Json,
    Image,
    Multipart,
}

fn content_kind(headers: &HeaderMap) -> std::result::Result<Kind, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let main = ct.split(';').next().unwrap_or("").trim();
    match main {
        "application/json" => Ok(Kind::Json),
        "image/png" | "image/jpeg" | "image/jpg" | "application/octet-stream" | "" => {
            Ok(Kind::Image)
        }
        "multipart/form-data" => Ok(Kind::Multipart),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Outcome::UnsupportedMediaType,
            format!(
                "content type {other} is not accepted: send image/png, image/jpeg, application/json or (batch) multipart/form-data"
            ),
        )),
    }
}

/// Queues images and waits for their verdicts.
async fn infer(
    st: &Shared,
    pixels: Vec<f32>,
    n: usize,
) -> std::result::Result<Vec<Verdict>, ApiError> {
    let (tx, rx) = oneshot::channel();
    if !st.ready.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Overloaded,
            "the service is shutting down",
        ));
    }
    st.queue
        .submit(Job {
            pixels,
            n,
            reply: tx,
        })
        .map_err(|e| match e {
            SubmitError::Full => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Outcome::Overloaded,
                "inference queue is full; retry shortly",
            ),
            SubmitError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Outcome::Overloaded,
                "the inference thread has stopped",
            ),
        })?;
    match tokio::time::timeout(st.cfg.timeout, rx).await {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            Outcome::Timeout,
            format!(
                "no verdict within the request timeout ({} ms)",
                st.cfg.timeout.as_millis()
            ),
        )),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::InternalError,
            "the inference thread dropped the request",
        )),
        Ok(Ok(Err(e))) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::InternalError,
            format!("inference failed: {e}"),
        )),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

fn finish(
    st: &Shared,
    endpoint: Endpoint,
    start: Instant,
    r: std::result::Result<Response, ApiError>,
) -> Response {
    st.metrics.latency(start.elapsed());
    match r {
        Ok(resp) => {
            st.metrics.request(endpoint, Outcome::Ok);
            resp
        }
        Err(e) => {
            st.metrics.request(endpoint, e.outcome);
            if e.outcome == Outcome::InternalError {
                tracing::error!("{}", e.msg);
            } else {
                tracing::debug!(status = %e.status, "{}", e.msg);
            }
            e.into_response()
        }
    }
}

fn count_verdicts(st: &Shared, v: &[Verdict]) {
    let adv = v.iter().filter(|v| v.adversarial).count();
    st.metrics.verdicts(adv, v.len() - adv);
}

async fn classify(State(st): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let r = classify_inner(&st, req, start).await;
    finish(&st, Endpoint::Classify, start, r)
}

async fn classify_inner(
    st: &Shared,
    req: Request,
    start: Instant,
) -> std::result::Result<Response, ApiError> {
    let kind = content_kind(req.headers())?;
    let body = Bytes::from_request(req, &()).await.map_err(body_error)?;
    let pixels = match kind {
        Kind::Json => decode::json_image(&body, st.shape),
        Kind::Image => decode::image_bytes(&body, st.shape),
        Kind::Multipart => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Outcome::UnsupportedMediaType,
                "multipart bodies go to /v1/classify/batch",
            ));
        }
    }
    .map_err(ApiError::bad)?;
    let mut v = infer(st, pixels, 1).await?;
    count_verdicts(st, &v);
    let verdict = v.pop().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::InternalError,
            "no verdict",
        )
    })?;
    Ok(axum::Json(ClassifyOut {
        verdict: verdict.answer(st.policy, &st.names),
        thresholds: st.thresholds.clone(),
        latency_ms: start.elapsed().as_secs_f64() * 1e3,
    })
    .into_response())
}

async fn classify_batch(State(st): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let r = batch_inner(&st, req, start).await;
    finish(&st, Endpoint::ClassifyBatch, start, r)
}

/// A multipart failure: over the body limit (413) or malformed (400).
fn multipart_error(status: StatusCode, msg: String) -> ApiError {
    let outcome = if status == StatusCode::PAYLOAD_TOO_LARGE {
        Outcome::PayloadTooLarge
    } else {
        Outcome::BadRequest
    };
    ApiError::new(status, outcome, msg)
}

async fn multipart_images(
    st: &Shared,
    req: Request,
) -> std::result::Result<(Vec<f32>, usize), ApiError> {
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| multipart_error(e.status(), format!("bad multipart body: {e}")))?;
    let mut pixels = Vec::new();
    let mut n = 0;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(multipart_error(
                    e.status(),
                    format!("bad multipart body: {e}"),
                ));
            }
        };
        let is_json = field
            .content_type()
            .is_some_and(|c| c.starts_with("application/json"));
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e.status(), format!("bad multipart part: {e}")))?;
        if n == st.cfg.max_images_per_request {
            return Err(ApiError::bad(Error::Invalid(format!(
                "more than {} images in one request (split the batch)",
                st.cfg.max_images_per_request
            ))));
        }
        let img = if is_json {
            decode::json_image(&bytes, st.shape)
        } else {
            decode::image_bytes(&bytes, st.shape)
        }
        .map_err(|e| ApiError::bad(decode::prefix(n, e)))?;
        pixels.extend(img);
        n += 1;
    }
    decode::check_count(n, st.cfg.max_images_per_request).map_err(ApiError::bad)?;
    Ok((pixels, n))
}

async fn batch_inner(
    st: &Shared,
    req: Request,
    start: Instant,
) -> std::result::Result<Response, ApiError> {
    let (pixels, n) = match content_kind(req.headers())? {
        Kind::Json => {
            let body = Bytes::from_request(req, &()).await.map_err(body_error)?;
            decode::json_batch(&body, st.shape, st.cfg.max_images_per_request)
                .map_err(ApiError::bad)?
        }
        Kind::Multipart => multipart_images(st, req).await?,
        Kind::Image => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Outcome::UnsupportedMediaType,
                "a batch is JSON ({\"images\": [...]}) or multipart/form-data with one image per part",
            ));
        }
    };
    let v = infer(st, pixels, n).await?;
    count_verdicts(st, &v);
    Ok(axum::Json(BatchOut {
        results: v
            .into_iter()
            .map(|v| v.answer(st.policy, &st.names))
            .collect(),
        denoisers: st.names.clone(),
        thresholds: st.thresholds.clone(),
        latency_ms: start.elapsed().as_secs_f64() * 1e3,
    })
    .into_response())
}
