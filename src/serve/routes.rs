//! The HTTP surface: routes, handlers, request decoding, answers and errors.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::oneshot;

use super::auth::auth;
use super::batcher::{Job, SubmitError};
use super::decode;
use super::metrics::{Endpoint, Outcome};
use super::{AppState, Shared};
use crate::defense::{Answer, Policy, Verdict};
use crate::error::Error;

/// A denoiser as `/v1/model` describes it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct DenoiserInfo {
    pub(super) name: String,
    pub(super) architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) edge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) noise: Option<f32>,
    pub(super) threshold: f32,
}

/// What `/v1/model` answers.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ModelInfo {
    pub(super) defed_version: &'static str,
    pub(super) classifier: String,
    pub(super) input_shape: [usize; 3],
    pub(super) classes: usize,
    pub(super) alpha: f32,
    pub(super) policy: Policy,
    pub(super) rule: &'static str,
    pub(super) denoisers: Vec<DenoiserInfo>,
    pub(super) calibration: Option<serde_json::Value>,
    pub(super) max_images_per_request: usize,
    pub(super) max_batch: usize,
}

pub(super) fn router(state: AppState) -> Router {
    // Layers run last-added first: the key is checked on the head alone, before any body is
    // read; then the body is read whole under the body timeout.
    let protected = Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/classify/batch", post(classify_batch))
        .route("/v1/model", get(model))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            count_abandoned,
        ));
    Router::new()
        .merge(protected)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.cfg.body_limit))
        .with_state(state)
}

async fn not_found(State(st): State<AppState>, req: Request) -> Response {
    st.metrics.request(Endpoint::Other, Outcome::NotFound);
    ApiError::new(
        StatusCode::NOT_FOUND,
        Outcome::NotFound,
        format!(
            "no such endpoint {}: POST /v1/classify, /v1/classify/batch; GET /v1/model, /healthz, /readyz, /metrics",
            req.uri().path()
        ),
    )
    .into_response()
}

async fn method_not_allowed(State(st): State<AppState>, req: Request) -> Response {
    st.metrics.request(Endpoint::Other, Outcome::NotFound);
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Outcome::NotFound,
        format!("{} does not take {}", req.uri().path(), req.method()),
    )
    .into_response()
}

/// Reads the whole body within the body timeout and the size limit, so that a client sending
/// slowly holds nothing for long; the handlers then get the buffered body.
async fn read_body(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = Endpoint::from_path(req.uri().path()).unwrap_or(Endpoint::Other);
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(
        st.cfg.body_timeout,
        axum::body::to_bytes(body, st.cfg.body_limit),
    )
    .await;
    let e = match read {
        Ok(Ok(bytes)) => {
            return next
                .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await;
        }
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            Outcome::BodyTimeout,
            format!(
                "the request body did not arrive within {} ms",
                st.cfg.body_timeout.as_millis()
            ),
        ),
        Ok(Err(e)) if is_length_limit(&e) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::PayloadTooLarge,
            format!(
                "request body over the service's limit of {} bytes",
                st.cfg.body_limit
            ),
        ),
        Ok(Err(e)) if client_went_away(&e) => {
            // Nobody is left to answer.
            st.metrics.request(endpoint, Outcome::Abandoned);
            return StatusCode::BAD_REQUEST.into_response();
        }
        Ok(Err(e)) => ApiError::new(
            StatusCode::BAD_REQUEST,
            Outcome::BadRequest,
            format!("cannot read the body: {e}"),
        ),
    };
    st.metrics.request(endpoint, e.outcome);
    let mut r = e.into_response();
    // The rest of the body is not read: the connection cannot carry another request.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Whether any error in the chain satisfies `f`.
fn any_cause(e: &axum::Error, f: impl Fn(&(dyn std::error::Error + 'static)) -> bool) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if f(c) {
            return true;
        }
        cur = c.source();
    }
    false
}

fn is_length_limit(e: &axum::Error) -> bool {
    any_cause(e, |c| c.is::<http_body_util::LengthLimitError>())
}

/// The connection closed or reset in the middle of the body.
fn client_went_away(e: &axum::Error) -> bool {
    any_cause(e, |c| {
        c.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_canceled() || h.is_closed())
            || c.is::<std::io::Error>()
    })
}

/// An error answer: status, JSON `{"error": ...}`, and how it is counted.
pub(super) struct ApiError {
    status: StatusCode,
    outcome: Outcome,
    msg: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, outcome: Outcome, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            outcome,
            msg: msg.into(),
        }
    }

    fn bad(e: Error) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, Outcome::BadRequest, e.to_string())
    }

    pub(super) fn into_response(self) -> Response {
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

async fn healthz(State(st): State<AppState>) -> &'static str {
    st.metrics.request(Endpoint::Probe, Outcome::Ok);
    "ok\n"
}

async fn readyz(State(st): State<AppState>) -> Response {
    if st.ready.load(Ordering::SeqCst) {
        st.metrics.request(Endpoint::Probe, Outcome::Ok);
        (StatusCode::OK, "ready\n").into_response()
    } else {
        st.metrics.request(Endpoint::Probe, Outcome::Overloaded);
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

/// Counts a request whose handling was dropped before it produced an answer: its client
/// closed the connection and hyper dropped the request's future (while reading the body or
/// waiting for the verdicts).
struct Answering<'a> {
    st: &'a Shared,
    endpoint: Endpoint,
    answered: bool,
}

impl<'a> Answering<'a> {
    fn new(st: &'a Shared, endpoint: Endpoint) -> Self {
        Answering {
            st,
            endpoint,
            answered: false,
        }
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.st.metrics.request(self.endpoint, Outcome::Abandoned);
        }
    }
}

/// The outermost layer of the counted routes: every request ends counted, by its handler or
/// a layer when answered, here when abandoned.
async fn count_abandoned(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = Endpoint::from_path(req.uri().path()).unwrap_or(Endpoint::Other);
    let mut guard = Answering::new(&st, endpoint);
    let r = next.run(req).await;
    guard.answered = true;
    r
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

/// Decodes off the async threads: a large PNG or JSON body takes milliseconds of CPU.
async fn decode_blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::bad),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::InternalError,
            format!("decoding failed: {e}"),
        )),
    }
}

async fn classify_inner(
    st: &Shared,
    req: Request,
    start: Instant,
) -> std::result::Result<Response, ApiError> {
    let kind = content_kind(req.headers())?;
    let body = Bytes::from_request(req, &()).await.map_err(body_error)?;
    let shape = st.shape;
    let pixels = match kind {
        Kind::Json => decode_blocking(move || decode::json_image(&body, shape)).await?,
        Kind::Image => decode_blocking(move || decode::image_bytes(&body, shape)).await?,
        Kind::Multipart => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Outcome::UnsupportedMediaType,
                "multipart bodies go to /v1/classify/batch",
            ));
        }
    };
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
        let shape = st.shape;
        let img = decode_blocking(move || {
            if is_json {
                decode::json_image(&bytes, shape)
            } else {
                decode::image_bytes(&bytes, shape)
            }
            .map_err(|e| decode::prefix(n, e))
        })
        .await?;
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
            let (shape, max) = (st.shape, st.cfg.max_images_per_request);
            decode_blocking(move || decode::json_batch(&body, shape, max)).await?
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
