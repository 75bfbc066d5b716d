//! The HTTP surface: routes, handlers, request decoding, answers and errors.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self};
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
