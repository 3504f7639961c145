//! The `earth` experiment, kernel-smoother part: the diffusion kernel smoother on S^2 (MATH.md section 5)
//! as a density estimator on the Earth event data, with the smoothing time chosen by validation
//! log-likelihood, and the test NLL (area measure of the unit sphere) over several seeded 80/10/10 splits,
//! next to the published table of MATH.md section 9.

use crate::data::{load_earth, split};
use anyhow::{Context, Result};
use nalgebra::DVector;
use scores::smoother::bandwidth::{select_time_by_validation, test_nll};
use scores::smoother::sphere::SphereSmoother;
use serde::Serialize;
use std::path::Path;
use tch::Tensor;

/// Published test NLL (lower is better) for (volcano, earthquake, flood, fire), MATH.md section 9.
pub const PUBLISHED: &[(&str, [f64; 4])] = &[
    ("Mixture of Kent", [-0.80, 0.33, 0.73, -1.18]),
    ("Riemannian CNF", [-6.05, 0.14, 1.11, -0.80]),
    ("Moser flow", [-4.21, -0.16, 0.57, -1.28]),
    ("Riemannian score-based (RSGM)", [-4.92, -0.19, 0.48, -1.33]),
    ("Riemannian flow matching", [-7.93, -0.28, 0.42, -1.86]),
];

/// The column of a data set in [`PUBLISHED`].
pub fn published_column(dataset: &str) -> Option<usize> {
    ["volcano", "earthquake", "flood", "fire"].iter().position(|d| *d == dataset)
}

/// One split's result.
#[derive(Debug, Clone, Serialize)]
pub struct SplitResult {
    /// The split's seed.
    pub seed: u64,
    /// The selected smoothing time.
    pub t: f64,
    /// Mean validation log-likelihood at `t`.
    pub valid_ll: f64,
    /// Test NLL at `t` (area measure).
    pub test_nll: f64,
    /// Seconds for selection and evaluation.
    pub seconds: f64,
}

/// The kernel smoother's results on one data set.
#[derive(Debug, Clone, Serialize)]
pub struct SmootherSummary {
    /// Data set name.
    pub dataset: String,
    /// Number of rows.
    pub n_rows: usize,
    /// Per split.
    pub splits: Vec<SplitResult>,
    /// Mean test NLL over the splits.
    pub test_nll_mean: f64,
    /// Standard deviation of the test NLL over the splits.
    pub test_nll_std: f64,
}

fn to_tensor(rows: &[DVector<f64>]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, 3])
}

/// Runs the smoother on `dataset` for `seeds` (split seed = base seed + index), calling `progress` after
/// each split.
pub fn run_smoother(
    data_dir: &Path,
    dataset: &str,
    base_seed: u64,
    n_seeds: usize,
    grid: &[f64],
    mut progress: impl FnMut(&SplitResult),
) -> Result<SmootherSummary> {
    let rows = load_earth(data_dir, dataset)?;
    let mut splits = Vec::new();
    for k in 0..n_seeds {
        let seed = base_seed + k as u64;
        let start = std::time::Instant::now();
        let s = split(&rows, 0.8, 0.1, seed)?;
        let smoother = SphereSmoother::new(&to_tensor(&s.train)).context("building the smoother")?;
        let (t, table) = select_time_by_validation(&smoother, &to_tensor(&s.valid), grid)
            .with_context(|| format!("selecting t on {dataset} (seed {seed})"))?;
        let valid_ll = table.iter().find(|(tt, _)| *tt == t).map(|(_, ll)| *ll).unwrap_or(f64::NAN);
        let nll = test_nll(&smoother, &to_tensor(&s.test), t)?;
        let r = SplitResult { seed, t, valid_ll, test_nll: nll, seconds: start.elapsed().as_secs_f64() };
        progress(&r);
        splits.push(r);
    }
    let n = splits.len() as f64;
    let mean = splits.iter().map(|r| r.test_nll).sum::<f64>() / n;
    let var = splits.iter().map(|r| (r.test_nll - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Ok(SmootherSummary {
        dataset: dataset.to_string(),
        n_rows: rows.len(),
        splits,
        test_nll_mean: mean,
        test_nll_std: var.sqrt(),
    })
}
