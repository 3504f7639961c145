//! The per-problem summary, pictures and end-of-run tables of the `ndsm` experiment.

use super::methods::{MethodKind, Trained};
use super::Prepared;
use crate::metrics::Mmd;
use crate::run::RunDir;
use anyhow::{Context, Result};
use serde_json::json;
use tch::Tensor;
use train::ndsm::{Estimator, EstimatorVariance};

/// One method after training, sampling and scoring.
#[derive(Debug)]
pub(super) struct MethodResult {
    pub trained: Trained,
    /// The finite samples, `[n, 2]` f64 on the CPU.
    pub sampled: Tensor,
    pub n_non_finite: i64,
    pub sample_seconds: f64,
    pub mmd: Mmd,
    pub mode_weights: Vec<f64>,
    pub mode_weight_error: f64,
    /// Fraction of the finite samples outside [`data_window`] (diverged reverse paths).
    pub outside_fraction: f64,
}

/// The estimator that measures a method's loss.
fn estimator_of(kind: MethodKind) -> Estimator {
    match kind {
        MethodKind::Dsm => Estimator::Dsm,
        MethodKind::Ndsm => Estimator::Ndsm,
        MethodKind::NdsmCv => Estimator::NdsmExact,
        MethodKind::NdsmNcv => Estimator::NdsmNeural,
    }
}

fn find(v: &[EstimatorVariance], e: Estimator) -> Option<&EstimatorVariance> {
    v.iter().find(|x| x.estimator == e)
}

/// Writes `samples/<method>.safetensors`, `summary.json`, `samples.png`, `variance.png` and
/// `loss_curves.png`, prints the tables and returns the summary.
pub(super) fn write(
    run: &RunDir,
    p: &Prepared,
    seed: u64,
    methods: &[MethodResult],
    reference: serde_json::Map<String, serde_json::Value>,
    test: &[[f64; 2]],
    pi_samples: &[[f64; 2]],
) -> Result<serde_json::Value> {
    let dir = run.file("samples");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for m in methods {
        let name = m.trained.kind.name();
        let (file, tmp) =
            (dir.join(format!("{name}.safetensors")), dir.join(format!(".{name}.tmp{}", std::process::id())));
        Tensor::write_safetensors(&[("samples", &m.sampled)], &tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &file).with_context(|| format!("cannot move {} to {}", tmp.display(), file.display()))?;
    }
    // The variance curve: measured on the ndsm_ncv run for every estimator.
    let curve: &[(u64, Vec<EstimatorVariance>)] =
        methods.iter().find(|m| !m.trained.variance.is_empty()).map(|m| m.trained.variance.as_slice()).unwrap_or(&[]);
    let mut out = serde_json::Map::new();
    for m in methods {
        let kind = m.trained.kind;
        let est = estimator_of(kind);
        let points: Vec<serde_json::Value> = curve
            .iter()
            .filter_map(|(step, v)| {
                let (e, base) = (find(v, est)?, find(v, Estimator::Ndsm)?);
                let (rl, rg) = e.ratios_to(base);
                Some(json!({
                    "step": step, "loss_mean": e.loss_mean, "loss_var": e.loss_var, "grad_var": e.grad_var,
                    "grad_mean_norm": e.grad_mean_norm, "loss_var_ratio": rl, "grad_var_ratio": rg,
                }))
            })
            .collect();
        let last = points.last().cloned().unwrap_or(json!({}));
        let t = &m.trained;
        let steps = t.losses.len() as u64;
        out.insert(
            kind.name().to_string(),
            json!({
                "final_loss": t.final_loss(),
                "mmd": m.mmd,
                "mode_weight_error": m.mode_weight_error,
                "mode_weights": m.mode_weights,
                "loss_var": last.get("loss_var"),
                "grad_var": last.get("grad_var"),
                "variance_ratio": {"loss": last.get("loss_var_ratio"), "grad": last.get("grad_var_ratio")},
                "variance_curve": points,
                "dist_to_manifold": 0.0,
                "non_finite_samples": m.n_non_finite,
                "outside_fraction": m.outside_fraction,
                "train_seconds": t.train_seconds,
                "sample_seconds": m.sample_seconds,
                "steps": steps,
                "steps_per_sec": steps as f64 / t.train_seconds.max(1e-9),
                "resumed_from": null,
            }),
        );
    }
    let pi = &p.em.mixture;
    let summary = json!({
        "experiment": format!("ndsm/{}", p.name),
        "seed": seed,
        "mmd_kernel": "MMD: Gaussian kernel on the Euclidean distance, median bandwidth of the held-out data",
        "outside_fraction": "fraction of samples outside the bounding box of the held-out data padded by half its \
                             extent (diverged reverse paths)",
        "mode_weight_error": "L1 distance sum_k |w_hat_k - w_k| between the frequencies of the nearest true modes and \
                              the true weights",
        "variance": "loss_var and grad_var of every estimator at the same parameters: the score network (current \
                     weights) and neural control variate of the ndsm_ncv run at the listed steps, on the same batches; \
                     ratios to ndsm (no control variate)",
        "methods": out,
        "reference": reference,
        "target": p.target,
        "pi": {
            "k": pi.n_components(),
            "weights": pi.weights(),
            "means": pi.means().iter().map(|m| m.iter().copied().collect::<Vec<f64>>()).collect::<Vec<_>>(),
            "mean_log_likelihood": p.em.log_likelihood.last(),
            "em_iterations": p.em.n_iter,
            "converged": p.em.converged,
            "grid_curvature": p.grid_curvature,
        },
    });
    run.write_summary(&summary)?;
    plots(run, p, methods, curve, test, pi_samples)?;
    print_tables(p, &summary, curve);
    Ok(summary)
}

fn plots(
    run: &RunDir,
    p: &Prepared,
    methods: &[MethodResult],
    curve: &[(u64, Vec<EstimatorVariance>)],
    test: &[[f64; 2]],
    pi_samples: &[[f64; 2]],
) -> Result<()> {
    // Panels share the window of the held-out data (padded): a few diverged samples would otherwise stretch
    // the shared axes until nothing is visible; points outside are counted in the caption.
    let window = data_window(test);
    let mut clipped: Vec<(String, Vec<[f64; 2]>)> = Vec::new();
    let pi_name = "pi (EM) alone";
    let all = [("held-out data".to_string(), test.to_vec()), (pi_name.to_string(), pi_samples.to_vec())]
        .into_iter()
        .chain(methods.iter().map(|m| (m.trained.kind.name().to_string(), super::rows(&m.sampled))));
    for (name, pts) in all {
        let inside: Vec<[f64; 2]> = pts.iter().copied().filter(|q| in_window(&window, q)).collect();
        let n_out = pts.len() - inside.len();
        let caption = if n_out > 0 { format!("{name} ({n_out} outside the data window)") } else { name };
        clipped.push((caption, inside));
    }
    let panels: Vec<crate::plot::ScatterPanel> =
        clipped.iter().map(|(n, s)| (n.as_str(), s.as_slice(), None)).collect();
    crate::plot::scatter_panels(
        &run.file("samples.png"),
        &format!("ndsm/{}: samples against data", p.name),
        3,
        &panels,
    )?;
    let mut series: Vec<(String, Vec<(u64, f64)>)> = Vec::new();
    for kind in MethodKind::ALL {
        let est = estimator_of(kind);
        for (what, f) in [
            ("loss_var", (|e: &EstimatorVariance| e.loss_var) as fn(&EstimatorVariance) -> f64),
            ("grad_var", |e| e.grad_var),
        ] {
            let pts: Vec<(u64, f64)> = curve.iter().filter_map(|(s, v)| find(v, est).map(|e| (*s, f(e)))).collect();
            if !pts.is_empty() {
                series.push((format!("{what} {}", kind.name()), pts));
            }
        }
    }
    if !series.is_empty() {
        let s: Vec<(&str, &[(u64, f64)])> = series.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
        crate::plot::step_curves(
            &run.file("variance.png"),
            &format!("ndsm/{}: estimator variance at the ndsm_ncv parameters", p.name),
            "variance",
            &s,
        )?;
    }
    let losses: Vec<(String, Vec<(u64, f64)>)> =
        methods.iter().map(|m| (m.trained.kind.name().to_string(), m.trained.loss_curve())).collect();
    let s: Vec<(&str, &[(u64, f64)])> = losses.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    crate::plot::loss_curves(&run.file("loss_curves.png"), &format!("ndsm/{}: training loss", p.name), &s)
}

/// The bounding box of the held-out data, padded by half its extent on every side.
pub(super) fn data_window(test: &[[f64; 2]]) -> [(f64, f64); 2] {
    let mut w = [(f64::INFINITY, f64::NEG_INFINITY); 2];
    for q in test {
        for (a, lim) in w.iter_mut().enumerate() {
            *lim = (lim.0.min(q[a]), lim.1.max(q[a]));
        }
    }
    w.map(|(lo, hi)| (lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo)))
}

/// Whether `q` lies in `window`.
pub(super) fn in_window(window: &[(f64, f64); 2], q: &[f64; 2]) -> bool {
    (0..2).all(|a| (window[a].0..=window[a].1).contains(&q[a]))
}

fn print_tables(p: &Prepared, summary: &serde_json::Value, curve: &[(u64, Vec<EstimatorVariance>)]) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "\nndsm/{} (n_train {}, pi k = {}; MMD: Gaussian kernel, median bandwidth {:.3}; mode_w_err: L1)",
        p.name,
        p.config.n_train,
        p.em.mixture.n_components(),
        f(&summary["reference"]["fresh_data"]["mmd"]["bandwidth"])
    );
    println!(
        "{:<10} {:>11} {:>11} {:>10} {:>8} {:>11} {:>11} {:>9} {:>9} {:>8}",
        "method",
        "final_loss",
        "mmd2",
        "mode_w_err",
        "outside",
        "loss_var",
        "grad_var",
        "loss_rat",
        "grad_rat",
        "train_s"
    );
    if let Some(ms) = summary["methods"].as_object() {
        for (n, s) in ms {
            println!(
                "{:<10} {:>11.4} {:>11.3e} {:>10.4} {:>8.4} {:>11.3e} {:>11.3e} {:>9.3} {:>9.3} {:>8.1}",
                n,
                f(&s["final_loss"]),
                f(&s["mmd"]["mmd2"]),
                f(&s["mode_weight_error"]),
                f(&s["outside_fraction"]),
                f(&s["loss_var"]),
                f(&s["grad_var"]),
                f(&s["variance_ratio"]["loss"]),
                f(&s["variance_ratio"]["grad"]),
                f(&s["train_seconds"]),
            );
        }
    }
    for r in ["fresh_data", "pi"] {
        let s = &summary["reference"][r];
        println!(
            "{:<10} {:>11} {:>11.3e} {:>10.4}   (reference)",
            r,
            "-",
            f(&s["mmd"]["mmd2"]),
            f(&s["mode_weight_error"])
        );
    }
    if !curve.is_empty() {
        println!("variance ratio to ndsm (loss / grad) against step, at the ndsm_ncv parameters:");
        println!("{:>7} {:>17} {:>17} {:>17}", "step", "dsm", "ndsm_cv", "ndsm_ncv");
        for (step, v) in curve {
            let cell = |e: Estimator| match (find(v, e), find(v, Estimator::Ndsm)) {
                (Some(a), Some(b)) => {
                    let (l, g) = a.ratios_to(b);
                    format!("{l:>8.3}/{g:<8.3}")
                }
                _ => format!("{:>17}", "-"),
            };
            println!(
                "{:>7} {:>17} {:>17} {:>17}",
                step,
                cell(Estimator::Dsm),
                cell(Estimator::NdsmExact),
                cell(Estimator::NdsmNeural)
            );
        }
    }
}
