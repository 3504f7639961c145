//! The uniform (Haar) base law on SO(3) (MATH.md section 2, "SO(3), uniform (Haar) base").
//!
//! With x = alpha R + sigma eps (R Haar, eps standard normal in R^{3x3}) and F = alpha x / sigma^2, the
//! posterior over R is the matrix Fisher law with parameter F. For the proper SVD F = U diag(s) V^T
//! (U, V in SO(3), s1 >= s2 >= |s3|, s3 < 0 exactly when det x < 0):
//!
//! - c(s) = int exp(tr(F^T R)) dR over the Haar probability measure (c(0) = 1), d_k = d ln c / d s_k;
//! - E[R | x] = U diag(d1, d2, d3) V^T, which stays well defined at repeated singular values;
//! - s_base(x) = (alpha E[R | x] - x) / sigma^2;
//! - log p_base(x) = ln int N(x; alpha R, sigma^2 I_9) dR
//!   = -(|x|_F^2 + 3 alpha^2)/(2 sigma^2) - (9/2) ln(2 pi sigma^2) + ln c(s)
//!   (|R|_F^2 = 3 and <x, R> = tr(x^T R)), evaluated as
//!   -sum_k (x_k - alpha)^2/(2 sigma^2) - (9/2) ln(2 pi sigma^2) + ln J(s), with x_k the signed singular
//!   values of x (s_k = alpha x_k / sigma^2) and ln J = ln c - (s1 + s2 + s3) <= 0, so that no two large
//!   terms cancel.
//!
//! The density is w.r.t. Lebesgue measure on R^9 (the trait's convention), with the flat coordinates of x
//! in row-major order.
//!
//! Numerics (details in [`fisher`]): the Taylor series of ln c for s1 <= 0.04, and otherwise an
//! inverse-Laplace (Talbot contour) representation of the scaled constant J with 24 fixed nodes, which is
//! uniformly accurate (relative errors below about 1e-13 for d and 1 - d, 1e-11 for ln c) from s = 0.04 to
//! 1e30 with any anisotropy; the proper SVD by one-sided Jacobi ([`svd`]).
//!
//! Batched evaluation: tensors on the CPU are evaluated point by point in f64 with rayon (the same numbers
//! as the per-point functions, and the fastest option there); tensors on other devices go through a
//! vectorised tensor version of the same method in f64 ([`So3Base::posterior_mean_vectorised_t`]).
//! Neither is differentiable: the results are detached.
//!
//! ```
//! use nalgebra::Matrix3;
//! use scores::base::so3::So3Base;
//! use scores::BaseScore;
//!
//! let base = So3Base::new();
//! // Far from any noise the posterior mean is the closest rotation, here the identity.
//! let x = Matrix3::from_diagonal(&nalgebra::Vector3::new(1.2, 0.9, 0.8));
//! let m = base.posterior_mean(&x, 1.0, 1e-3);
//! assert!((m - Matrix3::identity()).norm() < 1e-5);
//! // At x = 0 the posterior is Haar itself: E[R] = 0 and the score vanishes.
//! assert_eq!(base.base_score(&Matrix3::zeros(), 0.8, 0.5), Matrix3::zeros());
//! ```

pub mod fisher;
pub mod svd;
mod vectorised;

pub use fisher::{fisher_moments, FisherMoments};
pub use svd::{proper_svd, ProperSvd};

use super::sphere::{assert_batch_args, assert_scalars};
use crate::BaseScore;
use nalgebra::Matrix3;
use rayon::prelude::*;
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

/// The exact base score of the Haar (uniform) law on SO(3) (matrix Fisher posterior; module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct So3Base;

impl So3Base {
    /// The Haar base on SO(3) (it has no parameters).
    pub fn new() -> Self {
        So3Base
    }

    /// Batched posterior mean E[R | x]: `x: [B, 3, 3]`, `alpha, sigma: [B]` (float dtypes, same device) ->
    /// `[B, 3, 3]` in the dtype and device of `x`, detached. CPU tensors are evaluated per point in f64 with
    /// rayon, others by [`So3Base::posterior_mean_vectorised_t`]. Rows whose input is not finite, or with
    /// alpha < 0 or sigma <= 0, give NaN. Panics naming the argument on a shape mismatch.
    pub fn posterior_mean_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        assert_batch_args("So3Base::posterior_mean_t", x, &[3, 3], alpha, sigma);
        if x.device() == Device::Cpu {
            map_rows_cpu(x, alpha, sigma, |x, alpha, sigma| posterior(x, alpha, sigma).0)
        } else {
            self.posterior_mean_vectorised_t(x, alpha, sigma)
        }
    }

    /// The vectorised tensor version of [`So3Base::posterior_mean_t`]: `x: [B, 3, 3]`, `alpha, sigma: [B]`
    /// (float dtypes, same device, any device) -> `[B, 3, 3]` in the dtype and device of `x`, detached;
    /// computed in f64 on that device (`torch.linalg.svd`, then the series or the Talbot rule over
    /// `[B, 24]`). Agrees with the per-point path to about 1e-12 relative. Panics naming the argument on a
    /// shape mismatch; rows with invalid input give NaN, as in [`So3Base::posterior_mean_t`].
    pub fn posterior_mean_vectorised_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        assert_batch_args("So3Base::posterior_mean_vectorised_t", x, &[3, 3], alpha, sigma);
        let (a, s) = (alpha.to_kind(Kind::Double), sigma.to_kind(Kind::Double));
        vectorised::posterior_mean_f64(x, &factor(&a, &s)).to_kind(x.kind())
    }

    /// The vectorised tensor version of the base score, (alpha E[R|x] - x)/sigma^2 with E[R|x] from
    /// [`So3Base::posterior_mean_vectorised_t`]: same shapes, dtypes and devices, computed in f64, detached.
    pub fn base_score_vectorised_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        assert_batch_args("So3Base::base_score_vectorised_t", x, &[3, 3], alpha, sigma);
        let (a, s) = (alpha.to_kind(Kind::Double), sigma.to_kind(Kind::Double));
        let m = vectorised::posterior_mean_f64(x, &factor(&a, &s));
        let xd = x.detach().to_kind(Kind::Double);
        ((m * a.view([-1, 1, 1]) - xd) / s.square().view([-1, 1, 1])).to_kind(x.kind())
    }
}

/// alpha / sigma^2 for `[B]` tensors, NaN where sigma <= 0 (so that the row is marked invalid).
fn factor(alpha: &Tensor, sigma: &Tensor) -> Tensor {
    let k = alpha / sigma.square();
    k.where_self(&sigma.gt(0.0), &k.full_like(f64::NAN))
}

/// E\[R\] = U diag(d) V^T under the matrix Fisher law p(R) proportional to exp(tr(F^T R)) w.r.t. Haar measure.
///
/// Panics naming `f` if it is not finite.
#[track_caller]
pub fn fisher_mean(f: &Matrix3<f64>) -> Matrix3<f64> {
    let svd = proper_svd(f);
    svd.compose(fisher_moments(clamp_s(svd.s)).d)
}

/// ln c(F) = ln int exp(tr(F^T R)) dR over the Haar probability measure (0 at F = 0).
///
/// Panics naming `f` if it is not finite.
#[track_caller]
pub fn fisher_log_normaliser(f: &Matrix3<f64>) -> f64 {
    fisher_moments(clamp_s(proper_svd(f).s)).ln_c
}

/// Keeps singular values finite (they only overflow for absurd alpha / sigma^2; d is exact there anyway).
fn clamp_s(s: [f64; 3]) -> [f64; 3] {
    s.map(|v| v.clamp(-1e300, 1e300))
}

/// The posterior mean, the SVD of x and the moments at s = alpha x_k / sigma^2 (arguments checked by callers).
fn posterior(x: &Matrix3<f64>, alpha: f64, sigma: f64) -> (Matrix3<f64>, ProperSvd, FisherMoments) {
    let svd = proper_svd(x);
    let mut k = alpha / sigma / sigma;
    if !k.is_finite() {
        k = f64::MAX;
    }
    let moments = fisher_moments(clamp_s(svd.s.map(|v| v * k)));
    (svd.compose(moments.d), svd, moments)
}

impl BaseScore for So3Base {
    type Point = Matrix3<f64>;

    /// E[R | x] = U diag(d) V^T (module doc); 0 at x = 0.
    ///
    /// Panics naming the argument when `x` has a non-finite entry, `alpha` is negative or not finite, or
    /// `sigma` is not a finite positive number.
    fn posterior_mean(&self, x: &Matrix3<f64>, alpha: f64, sigma: f64) -> Matrix3<f64> {
        assert_point_args("So3Base::posterior_mean", x, alpha, sigma);
        posterior(x, alpha, sigma).0
    }

    /// (alpha E[R | x] - x) / sigma^2; panics as [`So3Base::posterior_mean`] does.
    fn base_score(&self, x: &Matrix3<f64>, alpha: f64, sigma: f64) -> Matrix3<f64> {
        assert_point_args("So3Base::base_score", x, alpha, sigma);
        (posterior(x, alpha, sigma).0 * alpha - x) / (sigma * sigma)
    }

    /// log p_base(x) w.r.t. Lebesgue measure on R^9 (module doc); panics as [`So3Base::posterior_mean`] does.
    fn log_density(&self, x: &Matrix3<f64>, alpha: f64, sigma: f64) -> f64 {
        assert_point_args("So3Base::log_density", x, alpha, sigma);
        let (_, svd, moments) = posterior(x, alpha, sigma);
        let sq: f64 = svd.s.iter().map(|xk| (xk - alpha).powi(2)).sum();
        -sq / (2.0 * sigma * sigma) - 4.5 * (2.0 * PI * sigma * sigma).ln() + moments.ln_j
    }

    /// `x: [B, 3, 3]`, `alpha, sigma: [B]` (float dtypes, same device) -> `[B, 3, 3]` in the dtype and device
    /// of `x`, detached (not differentiable). CPU tensors: per point in f64 with rayon; other devices:
    /// [`So3Base::base_score_vectorised_t`]. Rows whose input is not finite, or with alpha < 0 or
    /// sigma <= 0, give NaN. Panics naming the argument on a shape mismatch.
    fn base_score_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        assert_batch_args("So3Base::base_score_t", x, &[3, 3], alpha, sigma);
        if x.device() == Device::Cpu {
            map_rows_cpu(x, alpha, sigma, |x, alpha, sigma| {
                (posterior(x, alpha, sigma).0 * alpha - x) / (sigma * sigma)
            })
        } else {
            self.base_score_vectorised_t(x, alpha, sigma)
        }
    }
}

/// Panics naming the argument unless `x` is finite, `alpha` finite and >= 0, `sigma` finite and > 0.
#[track_caller]
fn assert_point_args(op: &str, x: &Matrix3<f64>, alpha: f64, sigma: f64) {
    geom::check::assert_finite(op, "x", x.as_slice());
    assert_scalars(op, alpha, sigma);
}

/// A detached f64 copy of `t` on the CPU, flattened (row-major).
fn to_f64_vec(t: &Tensor) -> Vec<f64> {
    let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Double).contiguous();
    let n = t.numel();
    let mut v = vec![0.0; n];
    t.copy_data(&mut v, n);
    v
}

/// Batches below this many rows are evaluated on the calling thread: a training batch (hundreds of rows)
/// costs well under a millisecond serially, while handing it to rayon's pool next to libtorch's OpenMP
/// threads (which spin after every parallel region) made a MAD training step up to 4x slower on 2 cores.
pub const PARALLEL_MIN_ROWS: usize = 8192;

/// Applies `f` to every row of a CPU batch in f64 (in parallel from [`PARALLEL_MIN_ROWS`] rows); rows
/// with invalid arguments give NaN.
fn map_rows_cpu(
    x: &Tensor,
    alpha: &Tensor,
    sigma: &Tensor,
    f: impl Fn(&Matrix3<f64>, f64, f64) -> Matrix3<f64> + Sync,
) -> Tensor {
    let b = x.size()[0];
    let (xs, al, sg) = (to_f64_vec(x), to_f64_vec(alpha), to_f64_vec(sigma));
    let mut out = vec![0.0; xs.len()];
    type Row<'a> = ((&'a mut [f64], &'a [f64]), (&'a f64, &'a f64));
    let row = |((o, xi), (&a, &s)): Row<'_>| {
        let valid = xi.iter().all(|v| v.is_finite()) && a.is_finite() && a >= 0.0 && s.is_finite() && s > 0.0;
        if valid {
            let r = f(&Matrix3::from_row_slice(xi), a, s);
            for i in 0..3 {
                for j in 0..3 {
                    o[3 * i + j] = r[(i, j)];
                }
            }
        } else {
            o.fill(f64::NAN);
        }
    };
    if (b as usize) < PARALLEL_MIN_ROWS {
        out.chunks_mut(9).zip(xs.chunks(9)).zip(al.iter().zip(sg.iter())).for_each(row);
    } else {
        out.par_chunks_mut(9)
            .zip(xs.par_chunks(9))
            .zip(al.par_iter().zip(sg.par_iter()))
            .with_min_len(256)
            .for_each(row);
    }
    Tensor::from_slice(&out).view([b, 3, 3]).to_kind(x.kind()).to_device(x.device())
}
