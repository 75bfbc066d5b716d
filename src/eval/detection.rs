//! Detection quality: ROC curves, AUC, and true-positive rates at fixed false-positive rates.

/// ROC curve points `(fpr, tpr)` from scores where higher means "more adversarial".
pub fn roc_curve(benign: &[f64], adv: &[f64]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, bool)> = benign
        .iter()
        .map(|&s| (s, false))
        .chain(adv.iter().map(|&s| (s, true)))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (np, nn) = (adv.len().max(1) as f64, benign.len().max(1) as f64);
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut pts = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < all.len() {
        let s = all[i].0;
        while i < all.len() && all[i].0 == s {
            if all[i].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        pts.push((fp / nn, tp / np));
    }
    pts
}

/// Area under the ROC curve (ties count half).
pub fn roc_auc(benign: &[f64], adv: &[f64]) -> f64 {
    let pts = roc_curve(benign, adv);
    pts.windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum()
}

/// True-positive rate when the threshold lets through all but a share `fpr` of benign images.
pub fn tpr_at_fpr(benign: &[f64], adv: &[f64], fpr: f64) -> f64 {
    let mut b = benign.to_vec();
    b.sort_by(|a, c| c.total_cmp(a));
    // Highest threshold index allowed: at most floor(fpr * n) benign above it.
    let k = (fpr * b.len() as f64).floor() as usize;
    let thr = if k >= b.len() {
        f64::NEG_INFINITY
    } else {
        b[k]
    };
    adv.iter().filter(|&&s| s > thr).count() as f64 / adv.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(roc_auc(&[0.0, 1.0], &[2.0, 3.0]), 1.0);
        assert_eq!(roc_auc(&[2.0, 3.0], &[0.0, 1.0]), 0.0);
        assert!((roc_auc(&[1.0, 1.0], &[1.0, 1.0]) - 0.5).abs() < 1e-12);
        // One inversion of four pairs.
        assert!((roc_auc(&[0.0, 2.0], &[1.0, 3.0]) - 0.75).abs() < 1e-12);
        // Benign scores 0..99: at 1% FPR one benign image (99) may be above the threshold, so
        // the threshold is 98; at 5% it is 94.
        let benign: Vec<f64> = (0..100).map(|i| i as f64).collect();
        assert_eq!(tpr_at_fpr(&benign, &[98.5, 50.0], 0.01), 0.5);
        assert_eq!(tpr_at_fpr(&benign, &[97.5, 50.0], 0.01), 0.0);
        assert_eq!(tpr_at_fpr(&benign, &[97.5, 50.0], 0.05), 0.5);
        assert_eq!(tpr_at_fpr(&benign, &[93.5, 50.0], 0.05), 0.0);
        assert_eq!(tpr_at_fpr(&benign, &[0.5], 1.0), 1.0);
    }
}
