//! The `Score` abstraction shared by training and sampling, and the base-score interface of MAD.

use tch::Tensor;

/// A batched score: an estimate of grad_x log p_t(x).
///
/// `x` has shape `[B, ..ambient]`, `t` has shape `[B]` (same dtype and device as `x`); the result has the
/// shape, dtype and device of `x`. Ambient scores (MAD, DSM) return ambient vectors; intrinsic scores
/// (heat kernels, kernel smoothers on a manifold) return tangent vectors at `x`.
pub trait Score: Send + Sync {
    /// The score at `(x, t)`.
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor;
}

/// The exact score of the noised base law p_base,t(x) = int N(x; alpha m, sigma^2 I) dBase(m)
/// (MATH.md section 2), for a base law on a manifold (uniform unless the type says otherwise).
///
/// Every base score is `(alpha E[m | x] - x) / sigma^2`; implementors provide the posterior mean.
pub trait BaseScore: Send + Sync {
    /// The per-point (f64, nalgebra) ambient representation.
    type Point: Clone + std::fmt::Debug;

    /// Posterior mean E[m | x] of the base law given x = alpha m + sigma eps, per point.
    fn posterior_mean(&self, x: &Self::Point, alpha: f64, sigma: f64) -> Self::Point;
    /// The base score (alpha E[m|x] - x) / sigma^2, per point.
    fn base_score(&self, x: &Self::Point, alpha: f64, sigma: f64) -> Self::Point;
    /// log p_base,t(x), the log-density w.r.t. Lebesgue measure on the ambient space, including every
    /// constant, per point.
    fn log_density(&self, x: &Self::Point, alpha: f64, sigma: f64) -> f64;
    /// The batched base score: `x: [B, ..ambient]`, `alpha, sigma: [B]` (same dtype and device as `x`)
    /// -> `[B, ..ambient]`.
    fn base_score_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor;
}
