//! Diffusion kernel smoothers (MATH.md section 5): the law at time t of a reversible diffusion started at
//! the empirical data law, as a kernel mean embedding; a score and a log-density with no network.
//!
//! For a mu-reversible diffusion with transition density k_t(x, y) w.r.t. mu, the law at time t started
//! from the data x_1..x_N is rho_t(x) = mu(x) (1/N) sum_i k_t(x, x_i), and its score is
//! grad log mu(x) + sum_i grad_x k_t(x, x_i) / sum_i k_t(x, x_i). The smoothers here are:
//!
//! - [`ou::OuSmoother`]: Euclidean Ornstein-Uhlenbeck, dX = -X dt + sqrt(2) dW, mu = N(0, I): the mixture
//!   (1/N) sum_i N(e^{-t} x_i, (1 - e^{-2t}) I), density w.r.t. Lebesgue measure.
//! - [`sphere::SphereSmoother`]: S^2 with Brownian motion of generator Delta (dX = sqrt(2) dB), direct form
//!   (a sum over the data for every query), density w.r.t. the area measure (total 4 pi).
//! - [`spectral::SphereSpectralSmoother`]: the same law through its spherical-harmonic expansion truncated
//!   at degree L ([`harmonics`]); per-query cost O(L^2) whatever N is.
//! - [`so3::So3Smoother`]: SO(3) with the angle metric and generator Delta, direct form, density w.r.t. the
//!   Haar probability measure (and w.r.t. the volume measure 8 pi^2 by a documented conversion).
//! - [`bandwidth`]: the choice of t by validation log-likelihood, and test negative log-likelihoods.
//!
//! Every smoother validates its data at construction (empty data, non-finite rows and off-manifold rows
//! are errors naming the row), errors naming `t` unless t is finite and > 0, gives a log-density and a
//! score at any t > 0 through [`SmootherDensity`], and implements [`Score`] (tangent vectors on
//! manifolds).
//! Per-point f64 methods (`log_density_point`, `score_point`) sum the exact kernels over the data: the
//! references for the batched paths.
//!
//! # Evaluation
//!
//! Everything runs in f64; results are cast back to the dtype and device of the query. Data are kept on the
//! host as `Vec<f64>` (`tch::Tensor` is not `Sync`, and [`Score`] needs `Sync`) and moved to the query's
//! device per call. Nothing here is differentiable: smoothers are evaluated under `no_grad`.
//!
//! - OU: chunked matrix products on the query's device (at most [`MAX_PAIRS_PER_CHUNK`] pairs at once)
//!   with a streaming log-sum-exp over data chunks.
//! - Direct forms on S^2 and SO(3): the kernel depends on the pair only through cos(angle), an affine
//!   function of a dot product; log k_t is read from a [`LogKernelTable`] (cubic Hermite, built once per t
//!   from the exact heat kernel and cached, error about 1e-10 on log k_t) instead of evaluating the heat
//!   kernel per pair, which costs microseconds. A [`DirectBackend`] picks a fused host loop (rayon over
//!   queries) for CPU queries or chunked tensor operations (at most [`MAX_PAIRS_PER_CHUNK`] pairs at once)
//!   on other devices.
//! - Spectral form: a host loop over queries, O(L^2) each.
//!
//! Measured at the target workload, 10,000 data x 10,000 queries on S^2 (release build, 2 cores shared
//! with other jobs; `MANIFOLD_GEN_SLOW_TESTS=1 cargo test --release -p scores --test smoothers --
//! --nocapture throughput`): the direct host loop costs 9-15 ns of CPU per (query, data) pair, 3,500-8,900
//! queries/s of wall time (log-density or score, t = 0.01 and 0.001); the tensor backend on the CPU
//! 70-115 ns per pair (it exists for other devices); the spectral form 57,000-86,000 queries/s at t = 0.01
//! (L = 52) and 6,200-11,000 at t = 0.001 (L = 173), after a fit of 0.3 s and 1 s.
//!
//! ```
//! use scores::smoother::{ou::OuSmoother, SmootherDensity};
//! use scores::Score;
//! use tch::Tensor;
//!
//! let data = Tensor::from_slice(&[0.0f64, 0.0, 2.0, 0.0]).view([2, 2]);
//! let smoother = OuSmoother::new(&data).unwrap();
//! let x = Tensor::from_slice(&[0.5f64, 0.0]).view([1, 2]);
//! let logp = smoother.log_density_t(&x, 0.3).unwrap();
//! assert!(logp.double_value(&[0]).is_finite());
//! let s = smoother.score(&x, &Tensor::from_slice(&[0.3f64]));
//! assert_eq!(s.size(), vec![1, 2]);
//! assert!(smoother.log_density_t(&x, 0.0).unwrap_err().to_string().contains("`t`"));
//! ```

pub mod bandwidth;
pub mod harmonics;
pub mod ou;
pub mod so3;
pub mod spectral;
pub mod sphere;

use crate::{Result, Score, ScoreError};
use std::collections::BTreeMap;
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

/// Default largest number of (query, data) pairs held in one intermediate matrix by the tensor paths
/// (2^22 pairs: 32 MiB per f64 temporary, of which the direct forms' table evaluation holds about a dozen).
pub const MAX_PAIRS_PER_CHUNK: i64 = 1 << 22;

/// Tolerance on the ambient distance to the manifold of data rows (and of queries passed to the
/// fallible methods): rows further off are rejected, rows within it are projected.
pub const MANIFOLD_TOL: f64 = 1e-6;

/// A kernel smoother seen as a density estimator: log rho_t at a batch of queries, at one time `t`.
///
/// The reference measure depends on the space and is stated by each implementor (Lebesgue on R^D, area
/// on S^2, Haar probability on SO(3)).
pub trait SmootherDensity: Score {
    /// log rho_t(x): `x: [Q, ..ambient]` of any float dtype and device -> `[Q]` with the dtype and device
    /// of `x`. Errors name `x` and the row for malformed queries, and `t` unless t is finite and > 0.
    fn log_density_t(&self, x: &Tensor, t: f64) -> Result<Tensor>;

    /// The score grad log rho_t at one time: `x: [Q, ..ambient]` -> `[Q, ..ambient]` (tangent vectors on
    /// manifolds), dtype and device of `x`; errors as [`SmootherDensity::log_density_t`].
    fn score_at(&self, x: &Tensor, t: f64) -> Result<Tensor>;
}

/// Errors naming `t` unless it is finite and > 0.
pub(crate) fn check_time(t: f64) -> Result<()> {
    if t.is_finite() && t > 0.0 {
        Ok(())
    } else {
        Err(ScoreError::invalid("t", t, "a finite time > 0"))
    }
}

/// Validates a data set: non-empty, shape `[N, ..point_shape]`, finite rows, rows within [`MANIFOLD_TOL`]
/// of the manifold (`validate` is the manifold's batched check, given the tolerance). Returns the data as
/// a contiguous Double tensor on its device.
///
/// (Smoothers keep their data on the host as `Vec<f64>`: `tch::Tensor` is not `Sync`, and [`Score`] needs
/// `Sync`. Each evaluation moves the data to the query's device, a cost linear in N next to the O(Q N)
/// work.)
pub(crate) fn validate_data(
    name: &str,
    data: &Tensor,
    point_shape: &[i64],
    validate: impl FnOnce(&Tensor) -> geom::Result<()>,
) -> Result<Tensor> {
    let size = data.size();
    if !size.is_empty() && size[0] == 0 {
        return Err(ScoreError::EmptyData { name: name.to_string() });
    }
    geom::check::check_batch_shape(name, data, point_shape)?;
    let data = data.detach().to_kind(Kind::Double).contiguous();
    validate(&data)?;
    Ok(data)
}

/// The entries of a tensor, row-major, as f64 on the host.
pub(crate) fn host_vec(x: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(x.detach().to_device(Device::Cpu).to_kind(Kind::Double).contiguous().view([-1]))
        .expect("a contiguous Double tensor converts to Vec<f64>")
}

/// A host buffer of `n` rows of shape `point_shape` as a Double tensor `[n, ..point_shape]` on `device`.
pub(crate) fn to_tensor(values: &[f64], shape: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(values).view(shape).to_device(device)
}

/// Per-row times `t: [B]` (any float dtype and device) as f64 on the host, grouped by value: each entry is
/// (t, indices of the rows with that time as an Int64 tensor on `device`). Errors naming `t` on a
/// non-positive or non-finite time, or on a length other than `b`.
pub(crate) fn group_times(t: &Tensor, b: i64, device: Device) -> Result<Vec<(f64, Tensor)>> {
    if t.size() != [b] {
        return Err(ScoreError::invalid("t", format!("a tensor of shape {:?}", t.size()), &format!("shape [{b}]")));
    }
    let values: Vec<f64> = Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).to_device(Device::Cpu).contiguous())
        .map_err(|e| ScoreError::invalid("t", e, "a tensor convertible to f64"))?;
    let mut groups: BTreeMap<u64, (f64, Vec<i64>)> = BTreeMap::new();
    for (i, &ti) in values.iter().enumerate() {
        check_time(ti).map_err(|_| ScoreError::invalid("t", format!("{ti} at row {i}"), "a finite time > 0"))?;
        groups.entry(ti.to_bits()).or_insert_with(|| (ti, Vec::new())).1.push(i as i64);
    }
    Ok(groups.into_values().map(|(ti, idx)| (ti, Tensor::from_slice(&idx).to_device(device))).collect())
}

/// Evaluates `f(x_rows, t)` for each distinct time in `t: [B]` and reassembles the rows:
/// `x: [B, ..]` -> `[B, ..out]` where `f` maps `[b, ..] -> [b, ..out]` (Double on `x`'s device); an
/// empty batch gives zeros shaped like `x`.
pub(crate) fn by_time(x: &Tensor, t: &Tensor, f: impl Fn(&Tensor, f64) -> Result<Tensor>) -> Result<Tensor> {
    let b = x.size()[0];
    let groups = group_times(t, b, x.device())?;
    if groups.is_empty() {
        // An empty batch: every smoother's score has the shape of its queries.
        return Ok(x.zeros_like());
    }
    if groups.len() == 1 {
        return f(x, groups[0].0);
    }
    let mut out: Option<Tensor> = None;
    for (ti, idx) in groups {
        let part = f(&x.index_select(0, &idx), ti)?;
        let o = out.get_or_insert_with(|| {
            let mut shape = part.size();
            shape[0] = b;
            Tensor::zeros(shape, (part.kind(), part.device()))
        });
        let _ = o.index_copy_(0, &idx, &part);
    }
    Ok(out.expect("a batch with at least one row has at least one time"))
}

/// A streaming log-sum-exp over the data, with an optional weighted sum of data features, so that the
/// data can be processed in chunks in bounded memory.
///
/// After every chunk of logits `l: [q, n]`, it holds m = max logit, s = sum exp(l - m) and
/// v = sum exp(l - m) a_ij f_j for coefficients `a: [q, n]` and features `f: [n, k]`.
pub(crate) struct LogSumExp {
    m: Option<Tensor>,
    s: Option<Tensor>,
    v: Option<Tensor>,
}

impl LogSumExp {
    pub(crate) fn new() -> Self {
        LogSumExp { m: None, s: None, v: None }
    }

    /// Adds a chunk: `logits: [q, n]`, `coef: [q, n]` (or none for coefficient 1), `features: [n, k]` (or
    /// none to skip the weighted sum). Consumes the logits' storage.
    pub(crate) fn add(&mut self, logits: Tensor, coef: Option<&Tensor>, features: Option<&Tensor>) {
        let chunk_max = logits.amax([1i64].as_slice(), true);
        let (m_new, old_scale) = match &self.m {
            None => (chunk_max, None),
            Some(m) => {
                let m_new = m.maximum(&chunk_max);
                let scale = (m - &m_new).exp();
                (m_new, Some(scale))
            }
        };
        let mut w = logits;
        let _ = w.g_sub_(&m_new);
        let _ = w.exp_();
        let chunk_s = w.sum_dim_intlist([1i64].as_slice(), true, Kind::Double);
        let chunk_v = features.map(|f| match coef {
            Some(a) => {
                let _ = w.g_mul_(a);
                w.matmul(f)
            }
            None => w.matmul(f),
        });
        match old_scale {
            None => {
                self.s = Some(chunk_s);
                self.v = chunk_v;
            }
            Some(scale) => {
                let s = self.s.take().expect("initialised with m");
                self.s = Some(s * &scale + chunk_s);
                self.v = match (self.v.take(), chunk_v) {
                    (Some(v), Some(cv)) => Some(v * &scale + cv),
                    (_, cv) => cv,
                };
            }
        }
        self.m = Some(m_new);
    }

    /// (log sum exp, `[q]`; weighted mean v / s, `[q, k]` if features were given).
    pub(crate) fn finish(self) -> (Tensor, Option<Tensor>) {
        let m = self.m.expect("at least one chunk was added");
        let s = self.s.expect("at least one chunk was added");
        let v = self.v.map(|v| v / &s);
        ((m + s.log()).squeeze_dim(1), v)
    }
}

/// Chunk sizes (queries, data) with q * n <= `max_pairs` (at least one pair).
pub(crate) fn chunk_sizes(n_queries: i64, n_data: i64, max_pairs: i64) -> (i64, i64) {
    let max_pairs = max_pairs.max(1);
    let n = n_data.clamp(1, max_pairs);
    let q = (max_pairs / n).clamp(1, n_queries.max(1));
    (q, n)
}

/// Runs the log-sum-exp over the data in chunks of at most `max_pairs` pairs: `pairwise(q_rows, lo, len)`
/// returns (logits `[q, len]`, optional coefficients `[q, len]`) for data rows `lo..lo+len`; `features`
/// (`[N, k]`) are the data features weighted by the softmax. Returns (log sum exp `[Q]`, weighted mean
/// `[Q, k]` if features were given).
pub(crate) fn chunked_lse(
    queries: &Tensor,
    n_data: i64,
    max_pairs: i64,
    features: Option<&Tensor>,
    pairwise: impl Fn(&Tensor, i64, i64) -> (Tensor, Option<Tensor>),
) -> (Tensor, Option<Tensor>) {
    let n_queries = queries.size()[0];
    if n_queries == 0 {
        let opts = (Kind::Double, queries.device());
        return (Tensor::zeros([0], opts), features.map(|f| Tensor::zeros([0, f.size()[1]], opts)));
    }
    let (qc, nc) = chunk_sizes(n_queries, n_data, max_pairs);
    let mut lse_parts = Vec::new();
    let mut mean_parts = Vec::new();
    let mut q0 = 0;
    while q0 < n_queries {
        let ql = qc.min(n_queries - q0);
        let qrows = queries.narrow(0, q0, ql);
        let mut acc = LogSumExp::new();
        let mut n0 = 0;
        while n0 < n_data {
            let nl = nc.min(n_data - n0);
            let (logits, coef) = pairwise(&qrows, n0, nl);
            let feat = features.map(|f| f.narrow(0, n0, nl));
            acc.add(logits, coef.as_ref(), feat.as_ref());
            n0 += nl;
        }
        let (lse, mean) = acc.finish();
        lse_parts.push(lse);
        if let Some(mean) = mean {
            mean_parts.push(mean);
        }
        q0 += ql;
    }
    let lse = Tensor::cat(&lse_parts, 0);
    let mean = if mean_parts.is_empty() { None } else { Some(Tensor::cat(&mean_parts, 0)) };
    (lse, mean)
}

// ---------------------------------------------------------------------------------------------------------
// The direct form on S^2 and SO(3): a mixture of heat kernels that depend on the angle only, evaluated from
// the cosine of the angle (a dot product) through a cubic Hermite table of log k_t.
// ---------------------------------------------------------------------------------------------------------

/// Cosines at or above this use the near variable w = 1 - cos a; below it, the far variable
/// z = sqrt(1 + cos a) (angles beyond 2 pi / 3).
pub const TABLE_SPLIT_COS: f64 = -0.5;
/// The tables' interpolation target: the cell counts are chosen so that the Hermite error of the leading
/// part -a^2/4t of log k_t is below this (and the measured error of the full table is of the same order).
pub const TABLE_TARGET_ERROR: f64 = 1e-11;
/// The fine part of the far region covers z in [0, `TABLE_FINE_WIDTH` h], h the coarse far step (where
/// the coarse grid's error near the caustic, about (h / z)^4 / 128, would exceed 1e-10).
pub const TABLE_FINE_WIDTH: usize = 100;
/// The fine far step is at most this fraction of t / sqrt(2) (z ~ (pi - a)/sqrt(2) near the antipode): it
/// resolves the antipodal caustic, of width O(t) in the angle, where log k_t has derivatives of order
/// (pi/2t)^k.
pub const TABLE_STEP_OVER_T: f64 = 0.01;
/// Upper bound on the fine cells (reached for t below about 1e-6) and on the near cells.
pub const TABLE_MAX_CELLS: usize = 1 << 22;

/// A piecewise-cubic Hermite interpolant of a log-kernel f(a) of an angle a in [0, pi], evaluated at
/// cosines c = cos a without any inverse trigonometric function: the direct smoothers' replacement for a
/// heat-kernel evaluation per (query, data) pair.
///
/// Variables (f and its derivative are exact at every node, from the kernel):
/// - near region, c >= [`TABLE_SPLIT_COS`]: w = 1 - c in [0, 3/2], equal cells. log k_t is analytic in w
///   there (a = 2 asin(sqrt(w/2)), and the kernel is even in a), its leading part -a^2/4t has fourth
///   derivatives of order 1/t, so the cell count grows like t^{-1/4} (2,048 to 16,384 cells for t from
///   1 down to 1e-5). The score factor is g = df/dc = -df/dw, with no division.
/// - far region, c < [`TABLE_SPLIT_COS`]: z = sqrt(1 + c) in [0, sqrt(1/2)), z = sqrt(2) cos(a/2), close
///   to (pi - a)/sqrt(2) at the antipode, where log k_t is even in pi - a and has its one short scale, the
///   caustic of width O(t). Equal coarse cells, and when t is small equal fine cells of width at most
///   [`TABLE_STEP_OVER_T`] t / sqrt(2) on [0, [`TABLE_FINE_WIDTH`] h_coarse]. g = (df/dz) / (2z).
///
/// Cell counts are chosen by measuring the Hermite error of the leading part -a^2/4t on the candidate grid
/// against [`TABLE_TARGET_ERROR`]; [`LogKernelTable::max_error`] measures the error of the built table
/// against the exact kernel at every cell midpoint (where the cubic Hermite error peaks).
#[derive(Debug)]
pub struct LogKernelTable {
    /// Far cells (fine then coarse), then near cells.
    n_far: usize,
    n_near: usize,
    inv_h_near: f64,
    /// Far grid: u = z / h_fine below z_fine, n_fine + (z - z_fine) / h_coarse above (two branches, not
    /// one piecewise-linear formula, which would cancel catastrophically when h_fine << h_coarse).
    inv_h_fine: f64,
    inv_h_coarse: f64,
    z_fine: f64,
    n_fine: usize,
    /// Per cell: [c0, c1, c2, c3, e0, e1, e2, 0] with p = c0 + c1 s + c2 s^2 + c3 s^3 and dp/dvariable =
    /// e0 + e1 s + e2 s^2, s in [0, 1] the position in the cell (one cache line per lookup).
    cells: Vec<[f64; 8]>,
    /// The coefficients as CPU Double tensors `[n]` per coefficient, built on first use (a `Tensor` is
    /// `Send`, not `Sync`).
    tensors: std::sync::Mutex<Option<[Tensor; 7]>>,
}

/// The angle of a near-variable value w = 1 - cos a, accurately at small w.
fn angle_of_w(w: f64) -> f64 {
    2.0 * (0.5 * w).max(0.0).sqrt().min(1.0).asin()
}

/// The angle of a far-variable value z = sqrt(1 + cos a), accurately near the antipode.
fn angle_of_z(z: f64) -> f64 {
    PI - 2.0 * (z / std::f64::consts::SQRT_2).clamp(0.0, 1.0).asin()
}

/// Hermite coefficients of a cell of width `h` from (f, df/dvariable) at its ends.
fn hermite_cell(h: f64, (f0, d0): (f64, f64), (f1, d1): (f64, f64)) -> [f64; 8] {
    let (m0, m1) = (h * d0, h * d1);
    let c = [f0, m0, 3.0 * (f1 - f0) - 2.0 * m0 - m1, 2.0 * (f0 - f1) + m0 + m1];
    [c[0], c[1], c[2], c[3], c[1] / h, 2.0 * c[2] / h, 3.0 * c[3] / h, 0.0]
}

/// Hermite value at position s of a cell.
#[inline]
fn hermite_value(k: &[f64; 8], s: f64) -> f64 {
    k[0] + s * (k[1] + s * (k[2] + s * k[3]))
}

/// Largest midpoint Hermite error of `model` (value, derivative) on `n` equal cells of [lo, hi].
fn model_error(n: usize, lo: f64, hi: f64, model: &(impl Fn(f64) -> (f64, f64) + Sync)) -> f64 {
    use rayon::prelude::*;
    let h = (hi - lo) / n as f64;
    (0..n)
        .into_par_iter()
        .with_min_len(256)
        .map(|j| {
            let (a, b) = (lo + j as f64 * h, lo + (j + 1) as f64 * h);
            let k = hermite_cell(h, model(a), model(b));
            let exact = model(0.5 * (a + b)).0;
            // Rounding of the Hermite sum itself is about eps |f|: not an interpolation error.
            ((hermite_value(&k, 0.5) - exact).abs() - 8.0 * f64::EPSILON * exact.abs()).max(0.0)
        })
        .reduce(|| 0.0, f64::max)
}

/// The smallest power of two >= `min_cells` whose model error is below [`TABLE_TARGET_ERROR`].
fn cells_for(min_cells: usize, lo: f64, hi: f64, model: impl Fn(f64) -> (f64, f64) + Sync) -> usize {
    let mut n = min_cells;
    while n < TABLE_MAX_CELLS && model_error(n, lo, hi, &model) > TABLE_TARGET_ERROR {
        n *= 2;
    }
    n
}

impl LogKernelTable {
    /// The table for time `t` (see the type's documentation) of `f(a) -> (f(a), f'(a))`, tabulated at its
    /// nodes in parallel; f'(0) = f'(pi) = 0 is imposed (heat kernels are even about both ends) and the
    /// near derivative at w = 0, f''(0), is extrapolated from f'(a)/sin a at a = 1e-3 and 2e-3.
    pub fn for_time(t: f64, f: impl Fn(f64) -> (f64, f64) + Sync) -> Self {
        use rayon::prelude::*;
        let sqrt2 = std::f64::consts::SQRT_2;
        let w_max = 1.0 - TABLE_SPLIT_COS;
        let z_max = (1.0 + TABLE_SPLIT_COS).sqrt();
        // Leading part -a^2/4t in each variable, with its derivative.
        let near_model = |w: f64| {
            let a = angle_of_w(w);
            let s = a.sin();
            (-a * a / (4.0 * t), if s > 0.0 { -a / (2.0 * t * s) } else { -1.0 / (2.0 * t) })
        };
        let far_model = |z: f64| {
            let a = angle_of_z(z);
            (-a * a / (4.0 * t), a / (t * (2.0 - z * z).sqrt()))
        };
        let n_near = cells_for(2048, 0.0, w_max, near_model);
        let n_coarse = cells_for(1024, 0.0, z_max, far_model);
        let h_coarse = z_max / n_coarse as f64;
        let fine_step = TABLE_STEP_OVER_T * t / sqrt2;
        let (n_fine, z_fine) = if fine_step.is_finite() && fine_step < h_coarse {
            let z_fine = TABLE_FINE_WIDTH as f64 * h_coarse;
            (((z_fine / fine_step).ceil() as usize).clamp(TABLE_FINE_WIDTH, TABLE_MAX_CELLS), z_fine)
        } else {
            (0, 0.0)
        };
        let n_coarse_cells = if n_fine > 0 { n_coarse - TABLE_FINE_WIDTH } else { n_coarse };
        let h_fine = if n_fine > 0 { z_fine / n_fine as f64 } else { h_coarse };
        let n_far = n_fine + n_coarse_cells;
        let h_near = w_max / n_near as f64;
        // Far nodes in z (n_far + 1), near nodes in w (n_near + 1).
        let z_node = |j: usize| if j <= n_fine { j as f64 * h_fine } else { z_fine + (j - n_fine) as f64 * h_coarse };
        let far: Vec<(f64, f64)> = (0..n_far + 1)
            .into_par_iter()
            .with_min_len(64)
            .map(|j| {
                let z = if j == n_far { z_max } else { z_node(j) };
                let a = angle_of_z(z);
                let (v, d) = f(a);
                (v, if j == 0 { 0.0 } else { -2.0 * d / (2.0 - z * z).sqrt() })
            })
            .collect();
        let near: Vec<(f64, f64)> = (0..n_near + 1)
            .into_par_iter()
            .with_min_len(64)
            .map(|j| {
                let w = if j == n_near { w_max } else { j as f64 * h_near };
                if j == 0 {
                    let r = |a: f64| f(a).1 / a.sin();
                    return (f(0.0).0, (4.0 * r(1e-3) - r(2e-3)) / 3.0);
                }
                let a = angle_of_w(w);
                let (v, d) = f(a);
                (v, d / a.sin())
            })
            .collect();
        let mut cells = Vec::with_capacity(n_far + n_near);
        for j in 0..n_far {
            let h = if j < n_fine { h_fine } else { h_coarse };
            cells.push(hermite_cell(h, far[j], far[j + 1]));
        }
        for j in 0..n_near {
            cells.push(hermite_cell(h_near, near[j], near[j + 1]));
        }
        LogKernelTable {
            n_far,
            n_near,
            inv_h_near: 1.0 / h_near,
            inv_h_fine: 1.0 / h_fine,
            inv_h_coarse: 1.0 / h_coarse,
            z_fine,
            n_fine,
            cells,
            tensors: std::sync::Mutex::new(None),
        }
    }

    /// The number of cells.
    pub fn n_cells(&self) -> usize {
        self.n_far + self.n_near
    }

    /// Scalar evaluation at a cosine `c` (clamped to [-1, 1]): (f(a), g) with g = df/dc = -f'(a)/sin a if
    /// `DERIV` (0 where sin a = 0 exactly), else g = 0. Exact derivative of the interpolant.
    #[inline]
    pub fn eval_cos<const DERIV: bool>(&self, c: f64) -> (f64, f64) {
        let c = c.clamp(-1.0, 1.0);
        if c >= TABLE_SPLIT_COS {
            let u = (1.0 - c) * self.inv_h_near;
            let j = (u as usize).min(self.n_near - 1);
            let s = u - j as f64;
            let k = &self.cells[self.n_far + j];
            let g = if DERIV { -(k[4] + s * (k[5] + s * k[6])) } else { 0.0 };
            (hermite_value(k, s), g)
        } else {
            let z = (1.0 + c).sqrt();
            // The position inside the cell is computed locally (an offset of n_fine cells would cost
            // eps n_fine of resolution in s).
            let (j, s) = if z < self.z_fine {
                let u = z * self.inv_h_fine;
                let j = (u as usize).min(self.n_fine - 1);
                (j, u - j as f64)
            } else {
                let u = (z - self.z_fine) * self.inv_h_coarse;
                let j = (u as usize).min(self.n_far - self.n_fine - 1);
                (self.n_fine + j, u - j as f64)
            };
            let k = &self.cells[j];
            let g = if DERIV { (k[4] + s * (k[5] + s * k[6])) / (2.0 * z).max(1e-300) } else { 0.0 };
            (hermite_value(k, s), g)
        }
    }

    /// The interpolant and its derivative in the angle at `a` in [0, pi].
    pub fn eval(&self, a: f64) -> (f64, f64) {
        let (v, g) = self.eval_cos::<true>(a.cos());
        (v, -g * a.sin())
    }

    /// The largest |interpolant - f| over the cell midpoints, with `f` the function tabulated (one more
    /// evaluation of f per cell, in parallel). The cells are evaluated at their midpoint directly, in their
    /// own variable: this is the interpolation error, free of the conditioning of the angle given its
    /// cosine (near the antipode a cosine with rounding error eps fixes pi - a only to about eps/(pi - a),
    /// which moves log k_t by about pi eps / (2 t (pi - a)), wherever log k_t comes from).
    pub fn max_error(&self, f: impl Fn(f64) -> f64 + Sync) -> f64 {
        use rayon::prelude::*;
        let h_near = 1.0 / self.inv_h_near;
        let (h_fine, h_coarse) = (1.0 / self.inv_h_fine, 1.0 / self.inv_h_coarse);
        let n_fine = self.n_fine;
        (0..self.n_cells())
            .into_par_iter()
            .with_min_len(64)
            .map(|j| {
                let a = if j >= self.n_far {
                    angle_of_w(((j - self.n_far) as f64 + 0.5) * h_near)
                } else if j < n_fine {
                    angle_of_z((j as f64 + 0.5) * h_fine)
                } else {
                    angle_of_z(self.z_fine + ((j - n_fine) as f64 + 0.5) * h_coarse)
                };
                (hermite_value(&self.cells[j], 0.5) - f(a)).abs()
            })
            .reduce(|| 0.0, f64::max)
    }

    /// The coefficient tensors on `device`.
    fn coef_tensors(&self, device: Device) -> [Tensor; 7] {
        let mut guard = self.tensors.lock().unwrap_or_else(|p| p.into_inner());
        let cpu = guard.get_or_insert_with(|| {
            std::array::from_fn(|k| Tensor::from_slice(&self.cells.iter().map(|cell| cell[k]).collect::<Vec<f64>>()))
        });
        std::array::from_fn(|k| cpu[k].to_device(device))
    }

    /// Batched [`LogKernelTable::eval_cos`]: `c` (any shape, Double, any device) holds cosines; returns f
    /// and, if asked, g = df/dc, both shaped like `c`, Double, on its device. Consumes `c`.
    pub fn eval_cos_t(&self, c: Tensor, with_derivative: bool) -> (Tensor, Option<Tensor>) {
        let [c0, c1, c2, c3, e0, e1, e2] = self.coef_tensors(c.device());
        let mut c = c;
        let _ = c.clamp_(-1.0, 1.0);
        let near = c.ge(TABLE_SPLIT_COS);
        // Near: u = (1 - c)/h + n_far, cells n_far..n_far + n_near - 1.
        let mut u_near = c.neg();
        let _ = u_near.g_add_scalar_(1.0).g_mul_scalar_(self.inv_h_near);
        let j_near = u_near.floor().clamp_max((self.n_near - 1) as f64);
        let _ = u_near.g_sub_(&j_near);
        // Far: z = sqrt(1 + c), cells 0..n_far - 1.
        let mut z = c;
        let _ = z.g_add_scalar_(1.0).clamp_min_(0.0).sqrt_();
        // Far: z = sqrt(1 + c); coarse cells n_fine..n_far - 1, fine cells 0..n_fine - 1 (positions in the
        // cell computed locally, offsets added to the integer index).
        let mut u_far = (&z - self.z_fine) * self.inv_h_coarse;
        let mut j_far = u_far.floor().clamp(0.0, (self.n_far - self.n_fine - 1) as f64);
        let _ = u_far.g_sub_(&j_far);
        let _ = j_far.g_add_scalar_(self.n_fine as f64);
        if self.n_fine > 0 {
            let in_fine = z.lt(self.z_fine);
            let mut u_fine = &z * self.inv_h_fine;
            let j_fine = u_fine.floor().clamp_max((self.n_fine - 1) as f64);
            let _ = u_fine.g_sub_(&j_fine);
            u_far = u_fine.where_self(&in_fine, &u_far);
            j_far = j_fine.where_self(&in_fine, &j_far);
        }
        let s = u_near.where_self(&near, &u_far);
        let j = (j_near + self.n_far as f64).where_self(&near, &j_far).to_kind(Kind::Int64);
        let mut p = c3.take(&j);
        let _ = p.g_mul_(&s).g_add_(&c2.take(&j)).g_mul_(&s).g_add_(&c1.take(&j)).g_mul_(&s).g_add_(&c0.take(&j));
        let g = with_derivative.then(|| {
            let mut dp = e2.take(&j);
            let _ = dp.g_mul_(&s).g_add_(&e1.take(&j)).g_mul_(&s).g_add_(&e0.take(&j));
            let _ = z.g_mul_scalar_(2.0).clamp_min_(1e-300);
            let far_g = &dp / &z;
            dp.neg_().where_self(&near, &far_g)
        });
        (p, g)
    }
}

/// A small cache of log-kernel tables keyed by time (bitwise), most recent last.
#[derive(Default)]
pub(crate) struct TableCache(std::sync::Mutex<Vec<(u64, std::sync::Arc<LogKernelTable>)>>);

impl TableCache {
    const CAPACITY: usize = 8;

    pub(crate) fn get_or_build(
        &self,
        t: f64,
        build: impl FnOnce() -> LogKernelTable,
    ) -> std::sync::Arc<LogKernelTable> {
        let key = t.to_bits();
        {
            let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
                let entry = cache.remove(i);
                let table = std::sync::Arc::clone(&entry.1);
                cache.push(entry);
                return table;
            }
        }
        let table = std::sync::Arc::new(build());
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= Self::CAPACITY {
            cache.remove(0);
        }
        cache.push((key, std::sync::Arc::clone(&table)));
        table
    }
}

impl Clone for TableCache {
    /// A fresh, empty cache.
    fn clone(&self) -> Self {
        TableCache::default()
    }
}

impl std::fmt::Debug for TableCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TableCache({} tables)", self.0.lock().map(|c| c.len()).unwrap_or(0))
    }
}

/// The direct-form mixture (1/N) sum_i k_t(angle(x, x_i)) over data rows flattened to `[N, D]`, where
/// cos angle = `scale` <x, x_i> + `shift` (S^2: 1, 0; SO(3): 1/2, -1/2 with the Frobenius product).
#[derive(Debug, Clone)]
pub(crate) struct AngularMixture {
    /// Row-major `[N, D]` on the host.
    pub(crate) data: Vec<f64>,
    pub(crate) n: i64,
    pub(crate) d: i64,
    pub(crate) scale: f64,
    pub(crate) shift: f64,
    pub(crate) max_pairs: i64,
    pub(crate) backend: DirectBackend,
    pub(crate) tables: TableCache,
}

/// The host loop skips pairs whose kernel is below e^-60 times the largest one for the same query (it
/// changes the sum by less than N e^-60 = N 9e-27 relative; the exponential is the costliest step).
pub const NEGLIGIBLE_LOG_WEIGHT: f64 = -60.0;

/// Where the direct smoothers evaluate their (query, data) pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectBackend {
    /// The fused host loop for CPU queries, tensors for queries on other devices.
    #[default]
    Auto,
    /// Always the fused host loop (f64, rayon over queries; results moved to the query's device).
    Host,
    /// Always chunked tensor operations on the query's device (matrix products of at most
    /// `max_pairs_per_chunk` pairs, the table evaluated by gathers).
    Tensor,
}

impl AngularMixture {
    /// (log sum_i k_t `[Q]`, and if asked sum_i w_i g_i x_i / sum_i w_i `[Q, D]` with w_i = k_t(x, x_i) and
    /// g_i = d log k_t / d<x, x_i>) for flattened Double queries `x: [Q, D]`, by chunked tensor operations on
    /// `x`'s device.
    pub(crate) fn evaluate_tensor(
        &self,
        x: &Tensor,
        table: &LogKernelTable,
        with_score: bool,
    ) -> (Tensor, Option<Tensor>) {
        let data = to_tensor(&self.data, &[self.n, self.d], x.device());
        let (scale, shift) = (self.scale, self.shift);
        chunked_lse(x, self.n, self.max_pairs, with_score.then_some(&data), |q, lo, len| {
            let mut c = q.matmul(&data.narrow(0, lo, len).tr());
            if scale != 1.0 || shift != 0.0 {
                let _ = c.g_mul_scalar_(scale).g_add_scalar_(shift);
            }
            let (f, g) = table.eval_cos_t(c, with_score);
            // d cos / d<x, x_i> = scale.
            let g = g.map(|mut g| {
                if scale != 1.0 {
                    let _ = g.g_mul_scalar_(scale);
                }
                g
            });
            (f, g)
        })
    }
    /// The host twin of [`AngularMixture::evaluate_tensor`], fused per (query, data) pair and parallel over
    /// queries (rayon): `x` row-major `[Q, D]` in f64; returns (log sum_i k_t `[Q]`, weighted means
    /// `[Q, D]`, empty unless `with_score`).
    pub(crate) fn evaluate_host(&self, x: &[f64], table: &LogKernelTable, with_score: bool) -> (Vec<f64>, Vec<f64>) {
        match (self.d, with_score) {
            (3, true) => self.host_loop::<3, true>(x, table),
            (3, false) => self.host_loop::<3, false>(x, table),
            (9, true) => self.host_loop::<9, true>(x, table),
            (9, false) => self.host_loop::<9, false>(x, table),
            (d, _) => unreachable!("AngularMixture: unsupported point dimension {d}"),
        }
    }

    fn host_loop<const D: usize, const SCORE: bool>(&self, x: &[f64], table: &LogKernelTable) -> (Vec<f64>, Vec<f64>) {
        use rayon::prelude::*;
        /// Queries per rayon task.
        const BLOCK: usize = 4;
        let n = self.n as usize;
        let q = x.len() / D;
        let data: Vec<[f64; D]> = self.data.chunks_exact(D).map(|r| std::array::from_fn(|k| r[k])).collect();
        let (scale, shift) = (self.scale, self.shift);
        let mut lse = vec![0.0; q];
        let mut mean = vec![0.0; if SCORE { q * D } else { 0 }];
        let run = |xs: &[f64], lse: &mut [f64], mean: &mut [f64]| {
            let mut f = vec![0.0; n];
            let mut g = vec![0.0; if SCORE { n } else { 0 }];
            for (qi, xq) in xs.chunks_exact(D).enumerate() {
                let xq: [f64; D] = std::array::from_fn(|k| xq[k]);
                let mut m = f64::NEG_INFINITY;
                for (j, y) in data.iter().enumerate() {
                    let mut dot = 0.0;
                    for k in 0..D {
                        dot += xq[k] * y[k];
                    }
                    let (fv, gv) = table.eval_cos::<SCORE>(scale * dot + shift);
                    f[j] = fv;
                    if SCORE {
                        g[j] = gv * scale;
                    }
                    m = m.max(fv);
                }
                let mut sum = 0.0;
                if SCORE {
                    let mut acc = [0.0; D];
                    for (j, y) in data.iter().enumerate() {
                        let e = f[j] - m;
                        if e < NEGLIGIBLE_LOG_WEIGHT {
                            continue;
                        }
                        let w = e.exp();
                        sum += w;
                        let wg = w * g[j];
                        for k in 0..D {
                            acc[k] += wg * y[k];
                        }
                    }
                    for k in 0..D {
                        mean[qi * D + k] = acc[k] / sum;
                    }
                } else {
                    for fv in &f {
                        let e = fv - m;
                        if e >= NEGLIGIBLE_LOG_WEIGHT {
                            sum += e.exp();
                        }
                    }
                }
                lse[qi] = m + sum.ln();
            }
        };
        if SCORE {
            x.par_chunks(BLOCK * D)
                .zip(lse.par_chunks_mut(BLOCK))
                .zip(mean.par_chunks_mut(BLOCK * D))
                .for_each(|((xs, l), mn)| run(xs, l, mn));
        } else {
            x.par_chunks(BLOCK * D).zip(lse.par_chunks_mut(BLOCK)).for_each(|(xs, l)| run(xs, l, &mut []));
        }
        (lse, mean)
    }

    /// Dispatch: the fused host loop for CPU queries (unless `backend` asks for tensors), the chunked
    /// tensor path otherwise. `x: [Q, D]` Double; results on `x`'s device.
    pub(crate) fn evaluate(&self, x: &Tensor, table: &LogKernelTable, with_score: bool) -> (Tensor, Option<Tensor>) {
        let use_host = match self.backend {
            DirectBackend::Auto => x.device() == Device::Cpu,
            DirectBackend::Host => true,
            DirectBackend::Tensor => false,
        };
        if !use_host {
            return self.evaluate_tensor(x, table, with_score);
        }
        let q = x.size()[0];
        let (lse, mean) = self.evaluate_host(&host_vec(x), table, with_score);
        let lse = Tensor::from_slice(&lse).to_device(x.device());
        let mean = with_score.then(|| Tensor::from_slice(&mean).view([q, self.d]).to_device(x.device()));
        (lse, mean)
    }
}
