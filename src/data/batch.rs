//! Seeded shuffling and batching.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// `0..n` in a random order fixed by `seed`.
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed));
    idx
}

/// Batches of indices over `0..n`: in order, or shuffled by a seed.
#[derive(Debug, Clone)]
pub struct Batches {
    order: Vec<usize>,
    batch_size: usize,
    pos: usize,
    drop_last: bool,
}

impl Batches {
    /// Batches in order.
    pub fn sequential(n: usize, batch_size: usize) -> Self {
        Batches {
            order: (0..n).collect(),
            batch_size: batch_size.max(1),
            pos: 0,
            drop_last: false,
        }
    }

    /// Batches in a random order fixed by `seed`.
    pub fn shuffled(n: usize, batch_size: usize, seed: u64) -> Self {
        Batches {
            order: shuffled_indices(n, seed),
            batch_size: batch_size.max(1),
            pos: 0,
            drop_last: false,
        }
    }

    /// Leave out a final batch smaller than the batch size.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }

    /// How many batches there are.
    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.order.len() / self.batch_size
        } else {
            self.order.len().div_ceil(self.batch_size)
        }
    }
}

impl Iterator for Batches {
    type Item = Vec<usize>;
    fn next(&mut self) -> Option<Vec<usize>> {
        let remaining = self.order.len() - self.pos;
        if remaining == 0 || (self.drop_last && remaining < self.batch_size) {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let out = self.order[self.pos..end].to_vec();
        self.pos = end;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_complete() {
        assert_eq!(shuffled_indices(50, 7), shuffled_indices(50, 7));
        assert_ne!(shuffled_indices(50, 7), shuffled_indices(50, 8));
        let mut all: Vec<usize> = Batches::shuffled(10, 3, 1).flatten().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(Batches::sequential(10, 3).count(), 4);
        assert_eq!(Batches::sequential(10, 3).drop_last(true).count(), 3);
    }
}
