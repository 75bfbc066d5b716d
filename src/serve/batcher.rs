//! Micro-batching: one inference thread takes requests from a bounded queue, gathers those that
//! arrive within a short window (up to a batch size) and runs them through the defender as one
//! batch, which burn spreads over every core. Requests larger than a batch are run in pieces,
//! interleaved fairly with the others (see [`fair_shares`]).

use std::collections::VecDeque;
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
    /// Images per inference batch; a larger request is run in pieces of this size,
    /// interleaved with the other requests.
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

/// How long a batch continuing a large request waits for other requests to join.
const CONTINUATION_WAIT: Duration = Duration::from_millis(10);

/// A request being answered: its images before `next` have verdicts.
struct Active {
    job: Job,
    next: usize,
    verdicts: Vec<Verdict>,
}

impl Active {
    fn new(job: Job) -> Self {
        Active {
            verdicts: Vec::with_capacity(job.n),
            job,
            next: 0,
        }
    }

    fn left(&self) -> usize {
        self.job.n - self.next
    }
}

/// How many images each request in progress puts in the next batch: one image per request in
/// turn, each request at most an equal share of the batch (`max_batch` over the requests
/// waiting). A request alone fills whole batches; beside others, a large request takes its
/// share and the batch stays small, so single images queued behind it are answered after one
/// short batch instead of waiting behind full ones (fair scheduling).
pub fn fair_shares(left: &[usize], max_batch: usize) -> Vec<usize> {
    let mut take = vec![0; left.len()];
    let mut total = 0;
    let max_batch = max_batch.max(1);
    let waiting = left.iter().filter(|&&l| l > 0).count().max(1);
    let cap = max_batch.div_ceil(waiting);
    loop {
        let mut moved = false;
        for (t, &l) in take.iter_mut().zip(left) {
            if total == max_batch {
                return take;
            }
            if *t < l.min(cap) {
                *t += 1;
                total += 1;
                moved = true;
            }
        }
        if !moved {
            return take;
        }
    }
}

fn worker(
    defender: Defender,
    device: Device,
    rx: Receiver<Job>,
    opts: BatchOptions,
    metrics: Arc<Metrics>,
) {
    let mut active: VecDeque<Active> = VecDeque::new();
    let take_job = |active: &mut VecDeque<Active>, j: Job| {
        metrics.queue(-1);
        active.push_back(Active::new(j));
    };
    loop {
        if active.is_empty() {
            // Idle: wait for a request, then up to the window for others to join it.
            match rx.recv() {
                Ok(j) => take_job(&mut active, j),
                Err(_) => break,
            }
            let deadline = Instant::now() + opts.window;
            while active.iter().map(Active::left).sum::<usize>() < opts.max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(j) => take_job(&mut active, j),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        } else if active.len() == 1 {
            // A large request in pieces: clients answered by the last batch get a moment (the
            // window, at least 10 ms: a few per cent of a full batch's time) to send their
            // next request, so that it shares the next batch instead of waiting behind a full
            // one.
            if let Ok(j) = rx.recv_timeout(opts.window.max(CONTINUATION_WAIT)) {
                take_job(&mut active, j);
            }
        }
        // Requests queued meanwhile join at once, so they share the next batch.
        while active.len() < opts.capacity.max(1) {
            match rx.try_recv() {
                Ok(j) => take_job(&mut active, j),
                Err(_) => break,
            }
        }
        // Requesters that gave up (timed out, disconnected) need no answer.
        active.retain(|a| {
            let gone = a.job.reply.is_closed();
            if gone {
                metrics.abandoned_images(a.left());
            }
            !gone
        });
        if active.is_empty() {
            continue;
        }
        let left: Vec<usize> = active.iter().map(Active::left).collect();
        let shares = fair_shares(&left, opts.max_batch);
        let n: usize = shares.iter().sum();
        let mut pixels = Vec::new();
        for (a, &k) in active.iter().zip(&shares) {
            let per = a.job.pixels.len() / a.job.n.max(1);
            pixels.extend_from_slice(&a.job.pixels[a.next * per..(a.next + k) * per]);
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
        match verdicts {
            Ok(v) => {
                let mut at = 0;
                for (a, &k) in active.iter_mut().zip(&shares) {
                    a.verdicts.extend_from_slice(&v[at..at + k]);
                    a.next += k;
                    at += k;
                }
            }
            Err(e) => {
                tracing::error!(images = n, "inference failed: {e}");
                // Every request with images in the failed batch gets the error.
                for (a, &k) in active.iter_mut().zip(&shares) {
                    if k > 0 {
                        a.next = a.job.n;
                        a.verdicts.clear();
                        a.verdicts.shrink_to_fit();
                        let (tx, _) = oneshot::channel();
                        let reply = std::mem::replace(&mut a.job.reply, tx);
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        // Answer the requests now complete; the requester may have gone meanwhile.
        let mut still = VecDeque::with_capacity(active.len());
        for a in active.drain(..) {
            if a.left() > 0 {
                still.push_back(a);
            } else if a.verdicts.len() == a.job.n {
                let _ = a.job.reply.send(Ok(a.verdicts));
            }
        }
        active = still;
    }
    tracing::info!("inference thread stopped");
}

#[cfg(test)]
mod tests {
    use super::fair_shares;

    #[test]
    fn shares_interleave_large_and_small_requests() {
        assert_eq!(fair_shares(&[256, 1, 1], 64), vec![22, 1, 1]);
        assert_eq!(fair_shares(&[256, 1, 1, 1, 1, 1, 1, 1, 1], 64)[0], 8);
        assert_eq!(fair_shares(&[256], 64), vec![64]);
        assert_eq!(fair_shares(&[3, 100, 100], 10), vec![3, 4, 3]);
        assert_eq!(fair_shares(&[2, 2], 64), vec![2, 2]);
        assert_eq!(fair_shares(&[], 64), Vec::<usize>::new());
    }
}
