//! Small differentiable tensor helpers for batched geometry near singular points.
//!
//! The pattern: compute both the regular formula with a *safe* denominator (one that is replaced by 1 where
//! it would vanish) and a Taylor expansion, then select with `where`. The branch not taken then never
//! produces an infinity whose gradient (0 * inf = NaN) would leak through `where`.

use tch::Tensor;

/// Replaces entries of `x` with |x| < `eps` by 1, so that dividing by the result is always finite.
///
/// `x` any shape; the result has the same shape, dtype and device.
pub fn safe_denominator(x: &Tensor, eps: f64) -> Tensor {
    let small = x.abs().lt(eps);
    x.where_self(&small.logical_not(), &x.ones_like())
}

/// `where(cond, a, b)` with `cond` broadcast against `a` and `b`.
pub fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    a.where_self(cond, b)
}

/// Euclidean norm over the last `n_dims` dimensions, keeping them as size-1 dims.
///
/// `x: [B, ..]` -> `[B, 1, ..]`; the gradient at 0 is 0 rather than NaN.
pub fn safe_norm_keepdim(x: &Tensor, dims: &[i64]) -> Tensor {
    let sq = x.square().sum_dim_intlist(dims, true, None);
    // Exactly zero, in any dtype (a fixed threshold such as 1e-300 rounds to 0 in f32); where the square
    // is positive the gradient x / |x| has magnitude at most 1.
    let tiny = sq.le(0.0);
    let safe_sq = sq.where_self(&tiny.logical_not(), &sq.ones_like());
    safe_sq.sqrt().where_self(&tiny.logical_not(), &sq.zeros_like())
}

/// Dot product over the last dimension, `[B, n] x [B, n] -> [B, 1]`.
pub fn dot_keepdim(x: &Tensor, y: &Tensor) -> Tensor {
    (x * y).sum_dim_intlist([-1i64].as_slice(), true, None)
}
