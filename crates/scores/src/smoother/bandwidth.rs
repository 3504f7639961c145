//! Choosing the smoothing time t by validation log-likelihood, and test negative log-likelihoods
//! (MATH.md sections 5 and 9).
//!
//! A kernel smoother is a density estimator; its time t plays the role of a bandwidth (the heat kernel
//! has "variance" 2t per dimension). [`select_time`] maximises a validation log-likelihood over a grid of
//! times and refines the best grid cell by golden-section search in log t. [`test_nll`] is the mean
//! negative log-likelihood of test points in the estimator's own convention: the area measure of the unit
//! sphere for the S^2 smoothers (comparable with the published Earth-data tables of MATH.md section 9),
//! the Haar probability measure for SO(3), Lebesgue measure for the OU smoother.

use super::{check_time, SmootherDensity};
use crate::{Result, ScoreError};
use tch::{Device, Kind, Tensor};

/// Golden-section refinement stops when the bracket in ln t is narrower than this (0.1 % in t).
pub const LOG_T_TOL: f64 = 1e-3;

/// At most this many golden-section evaluations after the grid.
pub const MAX_REFINE_EVALS: usize = 60;

/// The time maximising `log_lik` (a validation log-likelihood, typically a mean over validation points)
/// over `grid`, refined by golden-section search in ln t inside the bracket formed by the best grid time's
/// neighbours (one-sided at the ends of the grid: extend the grid when the best time sits at an end).
///
/// Returns (t_best, table), where the table lists every evaluation (grid and refinement) as
/// (t, log_lik) sorted by t. Non-finite values of `log_lik` (NaN, -inf) count as -inf, so a closure can
/// map an evaluation error to `f64::NEG_INFINITY`.
///
/// Errors: naming `grid` when it is empty or holds a time that is not finite and > 0; naming `log_lik`
/// when it is not finite at any grid time.
///
/// ```
/// use scores::smoother::bandwidth::select_time;
///
/// // A concave function of ln t with its maximum at t = 0.02.
/// let f = |t: f64| -(t.ln() - 0.02f64.ln()).powi(2);
/// let (t, table) = select_time(f, &[1e-3, 1e-2, 1e-1, 1.0]).unwrap();
/// assert!((t / 0.02 - 1.0).abs() < 2e-3);
/// assert!(table.len() > 4);
/// ```
pub fn select_time(log_lik: impl Fn(f64) -> f64, grid: &[f64]) -> Result<(f64, Vec<(f64, f64)>)> {
    if grid.is_empty() {
        return Err(ScoreError::invalid("grid", "[]", "at least one time"));
    }
    if let Some(i) = grid.iter().position(|t| check_time(*t).is_err()) {
        return Err(ScoreError::invalid("grid", format!("{} at index {i}", grid[i]), "finite times > 0"));
    }
    let mut times = grid.to_vec();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let eval = |t: f64| {
        let v = log_lik(t);
        if v.is_finite() || v == f64::INFINITY {
            v
        } else {
            f64::NEG_INFINITY
        }
    };
    let mut table: Vec<(f64, f64)> = times.iter().map(|&t| (t, eval(t))).collect();
    let k = (0..table.len()).fold(0, |k, i| if table[i].1 > table[k].1 { i } else { k });
    if table[k].1 == f64::NEG_INFINITY {
        return Err(ScoreError::invalid(
            "log_lik",
            "-inf or NaN at every grid time",
            "a finite value at some grid time",
        ));
    }
    if table.len() > 1 {
        let (lo, hi) = (times[k.saturating_sub(1)], times[(k + 1).min(times.len() - 1)]);
        golden_section(&eval, lo.ln(), hi.ln(), &mut table);
    }
    table.sort_by(|a, b| a.0.total_cmp(&b.0));
    let best = table.iter().fold(table[0], |b, &e| if e.1 > b.1 { e } else { b });
    Ok((best.0, table))
}

/// Golden-section maximisation of `f(exp(u))` for u in [a, b], recording evaluations in `table`.
fn golden_section(f: &impl Fn(f64) -> f64, mut a: f64, mut b: f64, table: &mut Vec<(f64, f64)>) {
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut record = |u: f64| {
        let t = u.exp();
        let v = f(t);
        table.push((t, v));
        v
    };
    let mut c = b - ratio * (b - a);
    let mut d = a + ratio * (b - a);
    let (mut fc, mut fd) = (record(c), record(d));
    let mut evals = 2;
    while b - a > LOG_T_TOL && evals < MAX_REFINE_EVALS {
        if fc >= fd {
            b = d;
            d = c;
            fd = fc;
            c = b - ratio * (b - a);
            fc = record(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + ratio * (b - a);
            fd = record(d);
        }
        evals += 1;
    }
}

/// The mean log-likelihood (1/M) sum_j log rho_t(x_j) of `x: [M, ..ambient]` (any float dtype and
/// device), in the estimator's reference measure. Errors as the estimator's `log_density_t`, and naming
/// `x` when it is empty.
pub fn mean_log_likelihood(estimator: &impl SmootherDensity, x: &Tensor, t: f64) -> Result<f64> {
    if x.size().first().copied().unwrap_or(0) == 0 {
        return Err(ScoreError::EmptyData { name: "x".to_string() });
    }
    let logp = estimator.log_density_t(x, t)?;
    Ok(logp.to_kind(Kind::Double).to_device(Device::Cpu).mean(Kind::Double).double_value(&[]))
}

/// The test negative log-likelihood -(1/M) sum_j log rho_t(x_j): area measure on S^2 (uniform law:
/// ln 4 pi = 2.531), Haar probability on SO(3) (uniform law: 0), Lebesgue on R^D. Errors as
/// [`mean_log_likelihood`].
pub fn test_nll(estimator: &impl SmootherDensity, test: &Tensor, t: f64) -> Result<f64> {
    Ok(-mean_log_likelihood(estimator, test, t)?)
}

/// [`select_time`] with the validation mean log-likelihood of `estimator` on `validation: [M, ..]`; a
/// time at which the estimator errors (for instance a spectral smoother whose degree is too small)
/// counts as -inf.
pub fn select_time_by_validation(
    estimator: &impl SmootherDensity,
    validation: &Tensor,
    grid: &[f64],
) -> Result<(f64, Vec<(f64, f64)>)> {
    if validation.size().first().copied().unwrap_or(0) == 0 {
        return Err(ScoreError::EmptyData { name: "validation".to_string() });
    }
    // Surface malformed validation data (rather than reading it as -inf) at the largest, safest time.
    if let Some(t_max) = grid.iter().copied().filter(|t| check_time(*t).is_ok()).reduce(f64::max) {
        mean_log_likelihood(estimator, validation, t_max)?;
    }
    select_time(|t| mean_log_likelihood(estimator, validation, t).unwrap_or(f64::NEG_INFINITY), grid)
}
