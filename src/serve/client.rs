//! A small blocking client for `defed serve`: classify files, and a load generator that
//! reports throughput and latency percentiles.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};

/// A service address with an optional API key.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    api_key: Option<String>,
}

/// A response: HTTP status and body text.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Client {
    /// A client for the service at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, api_key: Option<String>, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
            api_key,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn err(&self, path: &str, e: impl std::fmt::Display) -> Error {
        Error::Http {
            url: self.url(path),
            msg: e.to_string(),
        }
    }

    fn read(&self, path: &str, r: ureq::http::Response<ureq::Body>) -> Result<Reply> {
        let status = r.status().as_u16();
        let body = r
            .into_body()
            .read_to_string()
            .map_err(|e| self.err(path, format!("reading the answer: {e}")))?;
        Ok(Reply { status, body })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Reply> {
        let mut req = self.agent.get(self.url(path));
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let r = req.call().map_err(|e| self.err(path, e))?;
        self.read(path, r)
    }

    /// `POST path` with a body.
    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Reply> {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("Content-Type", content_type);
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let r = req.send(body).map_err(|e| self.err(path, e))?;
        self.read(path, r)
    }

    /// Classifies an image file: PNG and JPEG files are sent as they are; a `.npy` array of
    /// `N x C x H x W` (or one `C x H x W`) floats goes to the batch endpoint as JSON.
    pub fn classify_file(&self, path: &Path) -> Result<Reply> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "png" | "jpg" | "jpeg" => {
                let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                let ct = if ext == "png" {
                    "image/png"
                } else {
                    "image/jpeg"
                };
                self.post("/v1/classify", ct, &bytes)
            }
            "npy" => {
                let (pixels, [n, c, h, w]) = crate::data::read_npy_images(path)?;
                let per = c * h * w;
                let images: Vec<serde_json::Value> = pixels
                    .chunks(per)
                    .take(n)
                    .map(|p| serde_json::json!({ "pixels": p, "shape": [c, h, w] }))
                    .collect();
                let body = serde_json::to_vec(&serde_json::json!({ "images": images }))
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                self.post("/v1/classify/batch", "application/json", &body)
            }
            _ => Err(Error::Invalid(format!(
                "{}: send a .png, .jpg/.jpeg or .npy file",
                path.display()
            ))),
        }
    }
}

/// The request one load-test client sends over and over.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// Path, e.g. `/v1/classify`.
    pub path: String,
    /// Content type of the body.
    pub content_type: String,
    /// Body.
    pub body: Vec<u8>,
}

/// What a load test measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Seconds the test ran.
    pub seconds: f64,
    /// Requests answered (any status).
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 4xx answers.
    pub client_errors: u64,
    /// 503 answers (queue full).
    pub overloaded: u64,
    /// Other 5xx answers.
    pub server_errors: u64,
    /// Requests that got no answer (connection refused, reset, timed out).
    pub failed_connections: u64,
    /// Answered requests per second.
    pub requests_per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th-percentile latency, ms.
    pub p99_ms: f64,
    /// Slowest request, ms.
    pub max_ms: f64,
}

/// Runs `concurrency` clients, each sending the requests in turn as fast as answers come, for
/// `duration`.
pub fn load_test(
    client: &Client,
    requests: &[LoadRequest],
    concurrency: usize,
    duration: Duration,
) -> LoadReport {
    let start = Instant::now();
    let deadline = start + duration;
    let per_thread: Vec<(Vec<f64>, [u64; 5])> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrency.max(1))
            .map(|t| {
                let client = client.clone();
                s.spawn(move || {
                    let mut lat = Vec::new();
                    // ok, 4xx, 503, other 5xx, failed
                    let mut counts = [0u64; 5];
                    let mut i = t;
                    while Instant::now() < deadline && !requests.is_empty() {
                        let r = &requests[i % requests.len()];
                        i += 1;
                        let t0 = Instant::now();
                        match client.post(&r.path, &r.content_type, &r.body) {
                            Ok(reply) => {
                                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                                let k = match reply.status {
                                    200..=299 => 0,
                                    503 => 2,
                                    500..=599 => 3,
                                    _ => 1,
                                };
                                counts[k] += 1;
                            }
                            Err(_) => counts[4] += 1,
                        }
                    }
                    (lat, counts)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = per_thread.iter().flat_map(|(l, _)| l.clone()).collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut c = [0u64; 5];
    for (_, k) in &per_thread {
        for (a, b) in c.iter_mut().zip(k) {
            *a += b;
        }
    }
    let pct = |q: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * q).round() as usize]
        }
    };
    LoadReport {
        concurrency: concurrency.max(1),
        seconds,
        requests: lat.len() as u64,
        ok: c[0],
        client_errors: c[1],
        overloaded: c[2],
        server_errors: c[3],
        failed_connections: c[4],
        requests_per_second: lat.len() as f64 / seconds.max(1e-9),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: lat.last().copied().unwrap_or(0.0),
    }
}
