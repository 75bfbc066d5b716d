//! Service counters, rendered in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The endpoints that are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/classify`.
    Classify,
    /// `POST /v1/classify/batch`.
    ClassifyBatch,
    /// `GET /v1/model`.
    Model,
    /// `GET /metrics`.
    Metrics,
    /// `GET /healthz` and `GET /readyz`.
    Probe,
    /// Any other path or method (answered 404 or 405).
    Other,
}

impl Endpoint {
    const ALL: [Endpoint; 6] = [
        Endpoint::Classify,
        Endpoint::ClassifyBatch,
        Endpoint::Model,
        Endpoint::Metrics,
        Endpoint::Probe,
        Endpoint::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            Endpoint::Classify => "classify",
            Endpoint::ClassifyBatch => "classify_batch",
            Endpoint::Model => "model",
            Endpoint::Metrics => "metrics",
            Endpoint::Probe => "probe",
            Endpoint::Other => "other",
        }
    }

    /// The counted endpoint a path belongs to, if any.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        match path {
            "/v1/classify" => Some(Endpoint::Classify),
            "/v1/classify/batch" => Some(Endpoint::ClassifyBatch),
            "/v1/model" => Some(Endpoint::Model),
            "/metrics" => Some(Endpoint::Metrics),
            "/healthz" | "/readyz" => Some(Endpoint::Probe),
            _ => None,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (200).
    Ok,
    /// Malformed image, wrong shape, bad pixel values (400).
    BadRequest,
    /// Missing or wrong API key (401).
    Unauthorized,
    /// Body over the limit (413).
    PayloadTooLarge,
    /// Neither an image nor JSON (415).
    UnsupportedMediaType,
    /// Queue full or shutting down (503).
    Overloaded,
    /// Inference did not finish within the request timeout (504).
    Timeout,
    /// A fault inside the service (500).
    InternalError,
    /// The body did not arrive within the body timeout (408).
    BodyTimeout,
    /// No such path or method (404, 405).
    NotFound,
    /// The client closed the connection before its answer was ready.
    Abandoned,
}

impl Outcome {
    const ALL: [Outcome; 11] = [
        Outcome::Ok,
        Outcome::BadRequest,
        Outcome::Unauthorized,
        Outcome::PayloadTooLarge,
        Outcome::UnsupportedMediaType,
        Outcome::Overloaded,
        Outcome::Timeout,
        Outcome::InternalError,
        Outcome::BodyTimeout,
        Outcome::NotFound,
        Outcome::Abandoned,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadRequest => "bad_request",
            Outcome::Unauthorized => "unauthorized",
            Outcome::PayloadTooLarge => "payload_too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::Overloaded => "overloaded",
            Outcome::Timeout => "timeout",
            Outcome::InternalError => "internal_error",
            Outcome::BodyTimeout => "body_timeout",
            Outcome::NotFound => "not_found",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The service's counters; all lock-free.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; Outcome::ALL.len()]; Endpoint::ALL.len()],
    auth_failures: AtomicU64,
    auth_log_ms: AtomicU64,
    abandoned_images: AtomicU64,
    benign: AtomicU64,
    adversarial: AtomicU64,
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    batches: AtomicU64,
    batch_images: AtomicU64,
    queue_depth: AtomicI64,
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, endpoint: Endpoint, outcome: Outcome) {
        self.requests[endpoint as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted so far for an endpoint and outcome.
    pub fn count(&self, endpoint: Endpoint, outcome: Outcome) -> u64 {
        self.requests[endpoint as usize][outcome as usize].load(Ordering::Relaxed)
    }

    /// Counts a refused API key; says whether to log it (at most one line every 10 seconds,
    /// so that a flood of bad keys cannot flood the log).
    pub fn auth_failure(&self, now_ms: u64) -> Option<u64> {
        let total = self.auth_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.auth_log_ms.load(Ordering::Relaxed);
        if (total == 1 || now_ms >= last + 10_000)
            && self
                .auth_log_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(total)
        } else {
            None
        }
    }

    /// Counts images whose requester had gone before inference, and were skipped.
    pub fn abandoned_images(&self, n: usize) {
        self.abandoned_images.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records a classification request's latency.
    pub fn latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts verdicts.
    pub fn verdicts(&self, adversarial: usize, benign: usize) {
        self.adversarial
            .fetch_add(adversarial as u64, Ordering::Relaxed);
        self.benign.fetch_add(benign as u64, Ordering::Relaxed);
    }

    /// Counts one inference batch of `images` images.
    pub fn batch(&self, images: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_images
            .fetch_add(images as u64, Ordering::Relaxed);
    }

    /// Moves the queue-depth gauge.
    pub fn queue(&self, delta: i64) {
        self.queue_depth.fetch_add(delta, Ordering::Relaxed);
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.push_str("# HELP defed_requests_total Requests by endpoint and outcome.\n");
        s.push_str("# TYPE defed_requests_total counter\n");
        for e in Endpoint::ALL {
            for o in Outcome::ALL {
                let _ = writeln!(
                    s,
                    "defed_requests_total{{endpoint=\"{}\",outcome=\"{}\"}} {}",
                    e.label(),
                    o.label(),
                    self.count(e, o)
                );
            }
        }
        s.push_str(
            "# HELP defed_auth_failures_total Requests refused for a missing or wrong API key.\n",
        );
        s.push_str("# TYPE defed_auth_failures_total counter\n");
        let _ = writeln!(s, "defed_auth_failures_total {}", ld(&self.auth_failures));
        s.push_str("# HELP defed_abandoned_images_total Queued images skipped because their client had gone.\n");
        s.push_str("# TYPE defed_abandoned_images_total counter\n");
        let _ = writeln!(
            s,
            "defed_abandoned_images_total {}",
            ld(&self.abandoned_images)
        );
        s.push_str("# HELP defed_images_total Classified images by verdict.\n");
        s.push_str("# TYPE defed_images_total counter\n");
        let _ = writeln!(
            s,
            "defed_images_total{{verdict=\"benign\"}} {}",
            ld(&self.benign)
        );
        let _ = writeln!(
            s,
            "defed_images_total{{verdict=\"adversarial\"}} {}",
            ld(&self.adversarial)
        );
        s.push_str("# HELP defed_adversarial_total Images flagged as adversarial.\n");
        s.push_str("# TYPE defed_adversarial_total counter\n");
        let _ = writeln!(s, "defed_adversarial_total {}", ld(&self.adversarial));
        s.push_str("# HELP defed_request_duration_seconds Latency of classification requests.\n");
        s.push_str("# TYPE defed_request_duration_seconds histogram\n");
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += ld(&self.latency[i]);
            let _ = writeln!(
                s,
                "defed_request_duration_seconds_bucket{{le=\"{b}\"}} {cum}"
            );
        }
        cum += ld(&self.latency[BUCKETS.len()]);
        let _ = writeln!(
            s,
            "defed_request_duration_seconds_bucket{{le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            s,
            "defed_request_duration_seconds_sum {}",
            ld(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(s, "defed_request_duration_seconds_count {cum}");
        s.push_str("# HELP defed_inference_batches_total Inference batches run.\n");
        s.push_str("# TYPE defed_inference_batches_total counter\n");
        let _ = writeln!(s, "defed_inference_batches_total {}", ld(&self.batches));
        s.push_str(
            "# HELP defed_inference_images_total Images run through inference (all batches).\n",
        );
        s.push_str("# TYPE defed_inference_images_total counter\n");
        let _ = writeln!(s, "defed_inference_images_total {}", ld(&self.batch_images));
        s.push_str("# HELP defed_queue_depth Requests waiting for inference.\n");
        s.push_str("# TYPE defed_queue_depth gauge\n");
        let _ = writeln!(
            s,
            "defed_queue_depth {}",
            self.queue_depth.load(Ordering::Relaxed)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_are_all_counted_and_logged_at_most_every_10_s() {
        let m = Metrics::default();
        let logged: Vec<u64> = (0..100u64)
            .filter_map(|i| m.auth_failure(1_000 + i * 500))
            .collect();
        // 100 failures over 50 s: the first, then one per 10 s with the running total.
        assert_eq!(logged, vec![1, 21, 41, 61, 81]);
        assert!(m.render().contains("defed_auth_failures_total 100"));
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.latency(Duration::from_micros(500));
        m.latency(Duration::from_millis(20));
        m.latency(Duration::from_secs(60));
        m.request(Endpoint::Classify, Outcome::Ok);
        let text = m.render();
        assert!(text.contains("defed_request_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("defed_request_duration_seconds_bucket{le=\"0.025\"} 2"));
        assert!(text.contains("defed_request_duration_seconds_bucket{le=\"10\"} 2"));
        assert!(text.contains("defed_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("defed_requests_total{endpoint=\"classify\",outcome=\"ok\"} 1"));
    }
}
