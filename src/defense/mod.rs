//! The defence: adversarial scores of images under denoisers.

pub mod score;

pub use score::{AdvScore, adversarial_score};
