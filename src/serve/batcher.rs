//! Micro-batching: one inference thread takes requests from a bounded queue, gathers those that
//! arrive within a short window (up to a batch size) and runs them through the defender as one
//! batch, which burn spreads over every core.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::backend::Device;
use crate::defense::{Defender, Verdict};

/// What a job's requester gets back.
pub type JobResult = std::result::Result<Vec<Verdict>, String>;

/// Images of one request waiting for inference.
#[derive(Debug)]
pub struct Job {
    /// Flat pixels of `n` images, already checked.
    pub pixels: Vec<f32>,
    /// Number of images.
    pub n: usize,
    /// Where the verdicts go.
    pub reply: oneshot::Sender<JobResult>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    Full,
    /// The inference thread has stopped.
    Stopped,
}

/// The sending side of the queue.
#[derive(Debug, Clone)]
pub struct Queue {
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Queues a job without waiting; a full queue is refused at once.
    pub fn submit(&self, job: Job) -> std::result::Result<(), SubmitError> {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.metrics.queue(1);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }
}

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Requests that may wait; more are refused.
    pub capacity: usize,
    /// Images per inference batch (a single larger request still runs whole).
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub window: Duration,
}

/// Starts the inference thread. It ends when every [`Queue`] clone is dropped, after finishing
/// what was queued.
pub fn start(
    defender: Defender,
    device: Device,
    opts: BatchOptions,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Queue, JoinHandle<()>)> {
    let (tx, rx) = sync_channel::<Job>(opts.capacity.max(1));
    let m = metrics.clone();
    let handle = std::thread::Builder::new()
        .name("defed-inference".into())
        .spawn(move || worker(defender, device, rx, opts, m))?;
    Ok((Queue { tx, metrics }, handle))
}

fn worker(
    defender: Defender,
    device: Device,
    rx: Receiver<Job>,
    opts: BatchOptions,
    metrics: Arc<Metrics>,
) {
    while let Ok(first) = rx.recv() {
        metrics.queue(-1);
        let mut n = first.n;
        let mut jobs = vec![first];
        let deadline = Instant::now() + opts.window;
        while n < opts.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(j) => {
                    metrics.queue(-1);
                    n += j.n;
                    jobs.push(j);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // Requesters that gave up (timed out, disconnected) need no answer.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let n: usize = jobs.iter().map(|j| j.n).sum();
        let mut pixels = Vec::with_capacity(jobs.iter().map(|j| j.pixels.len()).sum());
        for j in &jobs {
            pixels.extend_from_slice(&j.pixels);
        }
        metrics.batch(n);
        // A fault in the numeric code must not take the service down with it.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| defender.defend(&pixels, &device)));
        let verdicts = match result {
            Ok(Ok(v)) if v.len() == n => Ok(v),
            Ok(Ok(v)) => Err(format!(
                "inference returned {} verdicts for {n} images",
                v.len()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("inference panicked".to_string()),
        };
        if let Err(e) = &verdicts {
            tracing::error!(images = n, "inference failed: {e}");
        }
        let mut at = 0;
        for j in jobs {
            let part = match &verdicts {
                Ok(v) => Ok(v[at..at + j.n].to_vec()),
                Err(e) => Err(e.clone()),
            };
            at += j.n;
            // The requester may have gone meanwhile; nothing to do then.
            let _ = j.reply.send(part);
        }
    }
    tracing::info!("inference thread stopped");
}
