//! Figures of the attack and robustness results: attack success and perturbation over eps,
//! the strong suite's robust accuracy over eps, and the adaptive attack's robust accuracy
//! over eps (adaptive vs transfer, `reject` vs `correct`). The defence evaluation's figures
//! are in [`crate::eval::report::figures`].

use super::adaptive::AdaptiveRow;
use super::charts::{Figure, LineChart, Panel, Series};
use crate::attack::{AttackStats, Norm, StrongReport};

/// An attack's name without its budget (`PGD-Linf eps=0.3` -> `PGD-Linf`).
fn family(name: &str) -> &str {
    name.split(" eps=").next().unwrap_or(name)
}

/// The norm's eps axis label.
fn eps_label(norm: Norm) -> String {
    format!("eps ({} budget)", norm.name())
}

/// Mean perturbation in the attack's own norm.
fn mean_in_norm(s: &AttackStats) -> f64 {
    match s.norm {
        Norm::L0 => s.mean_l0,
        Norm::L1 => s.mean_l1,
        Norm::L2 => s.mean_l2,
        Norm::Linf => s.mean_linf,
    }
}

/// Success rate and mean perturbation over eps for every attack run at two or more budgets
/// (`None` when no attack was).
pub fn sweep_figure(stats: &[AttackStats]) -> Option<Figure> {
    let mut families: Vec<(String, Norm)> = Vec::new();
    for s in stats.iter().filter(|s| s.eps.is_some()) {
        let key = (family(&s.attack).to_string(), s.norm);
        if !families.contains(&key) {
            families.push(key);
        }
    }
    let mut success = Vec::new();
    let mut size = Vec::new();
    for (name, norm) in &families {
        let mut pts: Vec<&AttackStats> = stats
            .iter()
            .filter(|s| s.eps.is_some() && s.norm == *norm && family(&s.attack) == name)
            .collect();
        if pts.len() < 2 {
            continue;
        }
        pts.sort_by(|a, b| a.eps.unwrap_or(0.0).total_cmp(&b.eps.unwrap_or(0.0)));
        let eps = |s: &AttackStats| s.eps.unwrap_or(0.0) as f64;
        success.push(
            Series::new(
                name.clone(),
                pts.iter().map(|s| (eps(s), s.success_rate)).collect(),
            )
            .with_markers(),
        );
        size.push(
            Series::new(
                format!("{name} ({})", norm.name()),
                pts.iter().map(|s| (eps(s), mean_in_norm(s))).collect(),
            )
            .with_markers(),
        );
    }
    if success.is_empty() {
        return None;
    }
    let mut a = LineChart::new(
        "Attack success over the budget",
        "eps",
        "success rate",
        success,
    );
    a.y_range = Some((0.0, 1.02));
    let b = LineChart::new(
        "Mean perturbation of the adversarial images",
        "eps",
        "mean distance in the attack's norm",
        size,
    );
    Some(Figure {
        name: "attack-sweep".into(),
        caption: "Left: share of attacked images misclassified, per attack and budget; right: the mean perturbation of the adversarial images, in each attack's own norm.".into(),
        panels: vec![Panel::Line(a), Panel::Line(b)],
    })
}

/// The strong suite's robust accuracy over eps (from the clean accuracy at 0), after each
/// attack of the cascade and overall, one panel per norm.
pub fn strong_figure(reports: &[StrongReport]) -> Option<Figure> {
    let mut panels = Vec::new();
    for norm in [Norm::Linf, Norm::L2, Norm::L1, Norm::L0] {
        let mut rs: Vec<&StrongReport> = reports.iter().filter(|r| r.norm == norm).collect();
        if rs.is_empty() {
            continue;
        }
        rs.sort_by(|a, b| a.eps.total_cmp(&b.eps));
        let clean = (0.0, rs[0].clean_accuracy);
        let mut series = vec![
            Series::new(
                "robust accuracy (worst case over the suite)",
                std::iter::once(clean)
                    .chain(rs.iter().map(|r| (r.eps as f64, r.robust_accuracy)))
                    .collect(),
            )
            .with_markers(),
        ];
        let stages = rs[0].stages.len();
        for k in 0..stages {
            let name = family(&rs[0].stages[k].attack).to_string();
            series.push(
                Series::new(
                    format!("after {name}"),
                    std::iter::once(clean)
                        .chain(rs.iter().filter_map(|r| {
                            r.stages.get(k).map(|s| (r.eps as f64, s.robust_accuracy))
                        }))
                        .collect(),
                )
                .dashed(),
            );
        }
        let mut c = LineChart::new(
            format!("Strong suite, {} ({} images)", norm.name(), rs[0].images),
            eps_label(norm),
            "accuracy under attack",
            series,
        );
        c.y_range = Some((0.0, 1.02));
        panels.push(Panel::Line(c));
    }
    (!panels.is_empty()).then(|| Figure {
        name: "strong".into(),
        caption: "Accuracy under the strong suite's cascade (each attack runs on the images the earlier ones did not break; eps 0 is the clean accuracy).".into(),
        panels,
    })
}

/// The adaptive evaluation's robust accuracy over eps, one panel per norm: the adaptive
/// attack under the `reject` and `correct` policies, and non-adaptive transfer PGD.
pub fn adaptive_figure(rows: &[AdaptiveRow]) -> Option<Figure> {
    let mut panels = Vec::new();
    for norm in [Norm::Linf, Norm::L2, Norm::L1, Norm::L0] {
        let mut rs: Vec<&AdaptiveRow> = rows.iter().filter(|r| r.adaptive.norm == norm).collect();
        if rs.is_empty() {
            continue;
        }
        rs.sort_by(|a, b| a.adaptive.eps.total_cmp(&b.adaptive.eps));
        let line = |name: &str, f: &dyn Fn(&AdaptiveRow) -> f64| {
            Series::new(
                name,
                rs.iter().map(|r| (r.adaptive.eps as f64, f(r))).collect(),
            )
            .with_markers()
        };
        let mut c = LineChart::new(
            format!(
                "Defended accuracy, {} ({} images)",
                norm.name(),
                rs[0].adaptive.images
            ),
            eps_label(norm),
            "robust accuracy",
            vec![
                line("adaptive, reject policy", &|r| {
                    r.adaptive.robust_accuracy_reject
                }),
                line("adaptive, correct policy", &|r| {
                    r.adaptive.robust_accuracy_correct
                }),
                line("transfer, reject policy", &|r| {
                    1.0 - r.transfer_evade_success
                })
                .dashed(),
                line("transfer, correct policy", &|r| {
                    1.0 - r.transfer_wrong_label
                })
                .dashed(),
            ],
        );
        c.y_range = Some((0.0, 1.02));
        panels.push(Panel::Line(c));
    }
    (!panels.is_empty()).then(|| Figure {
        name: "adaptive".into(),
        caption: "Robust accuracy of the defended classifier over the budget: the white-box adaptive attack (solid) and PGD on the bare classifier judged by the defender (transfer, dashed); under reject a flagged image counts as defended, under correct only the true final label does.".into(),
        panels,
    })
}
