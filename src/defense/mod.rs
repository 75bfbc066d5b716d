//! Stage 5, the defence: adversarial scores of images under denoisers, and the multi-denoiser
//! defender (detection, label correction, calibration, bundles).

mod bundle;
mod defender;
pub mod score;

pub use bundle::denoiser_name;
pub use defender::{
    Answer, Calibration, Defender, DefenderDenoiser, Policy, Scores, ThresholdRule, Verdict,
    decide_with, flag_rate, k_std_threshold, mean_std, quantile, thresholds_fpr, thresholds_k_std,
};
pub use score::{AdvScore, adversarial_score};
