//! Monotone rational-quadratic splines with linear tails (Durkan et al. 2019, "Neural Spline Flows").
//!
//! On `[-B, B]` (`B` = [`SplineConfig::tail_bound`]) the map is a monotone rational-quadratic spline with
//! `K` bins whose widths, heights and interior knot derivatives come from `3K - 1` unconstrained
//! parameters per dimension: widths and heights through a softmax (each at least `min_bin_width`,
//! `min_bin_height` of the interval), derivatives through `min_derivative + softplus`. The derivatives at
//! `±B` are fixed to 1 and the map is the identity outside `[-B, B]`, so the spline joins its linear tails
//! with a continuous first derivative. With all parameters zero the spline is the identity.
//!
//! The forward map works on [`Dual`]s (tangents through the input *and* the parameters, for the decoder
//! Jacobian); the inverse is the stable root of the bin's quadratic, on plain tensors.

use crate::dual::Dual;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Shape of the spline: bins, tail bound and the floors that keep it strictly monotone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplineConfig {
    /// Number of bins `K` (>= 2).
    pub bins: i64,
    /// Half-width `B` of the spline's interval; the identity outside (finite, > 0).
    pub tail_bound: f64,
    /// Smallest bin width as a fraction of `2B` (in [0, 1/K)).
    pub min_bin_width: f64,
    /// Smallest bin height as a fraction of `2B` (in [0, 1/K)).
    pub min_bin_height: f64,
    /// Smallest knot derivative (in (0, 1)).
    pub min_derivative: f64,
}

impl Default for SplineConfig {
    /// 8 bins, tail bound 3, floors 1e-3.
    fn default() -> Self {
        SplineConfig { bins: 8, tail_bound: 3.0, min_bin_width: 1e-3, min_bin_height: 1e-3, min_derivative: 1e-3 }
    }
}

impl SplineConfig {
    /// Unconstrained parameters per transformed dimension, `3K - 1`.
    pub fn params_per_dim(&self) -> i64 {
        3 * self.bins - 1
    }

    /// Validates the fields; errors name the field as `{prefix}.{field}`.
    pub fn check(&self, prefix: &str) -> crate::Result<()> {
        use crate::MflowError as E;
        let name = |f: &str| format!("{prefix}.{f}");
        if self.bins < 2 {
            return Err(E::invalid(&name("bins"), self.bins, "an integer >= 2"));
        }
        if !(self.tail_bound.is_finite() && self.tail_bound > 0.0) {
            return Err(E::invalid(&name("tail_bound"), self.tail_bound, "a finite number > 0"));
        }
        let k = self.bins as f64;
        for (f, v) in [("min_bin_width", self.min_bin_width), ("min_bin_height", self.min_bin_height)] {
            if !(v >= 0.0 && v * k < 1.0) {
                return Err(E::invalid(&name(f), v, "a number in [0, 1/bins)"));
            }
        }
        if !(self.min_derivative > 0.0 && self.min_derivative < 1.0) {
            return Err(E::invalid(&name("min_derivative"), self.min_derivative, "a number in (0, 1)"));
        }
        Ok(())
    }
}

/// Knot positions and derivatives of one spline per (row, dimension).
struct Knots {
    cumwidths: Dual,
    widths: Dual,
    cumheights: Dual,
    heights: Dual,
    derivatives: Dual,
}

/// Normalised bin sizes and knot positions on `[-B, B]` from unconstrained sizes `[.., K]`.
fn positions(u: &Dual, min_size: f64, c: &SplineConfig) -> (Dual, Dual) {
    let k = c.bins;
    let b = c.tail_bound;
    let sizes = u.softmax_last().scale(1.0 - min_size * k as f64).add_scalar(min_size);
    // Knots -B, .., B; the last one set exactly to B so that round-off cannot leave a gap.
    let cum = sizes.cumsum_last().pad_last(1, 0, 0.0).scale(2.0 * b).add_scalar(-b);
    let cum = cum.narrow_last(0, k).pad_last(0, 1, b);
    let sizes = cum.narrow_last(1, k).sub(&cum.narrow_last(0, k));
    (cum, sizes)
}

fn knots(params: &Dual, c: &SplineConfig) -> Knots {
    let k = c.bins;
    let (cumwidths, widths) = positions(&params.narrow_last(0, k), c.min_bin_width, c);
    let (cumheights, heights) = positions(&params.narrow_last(k, k), c.min_bin_height, c);
    // Boundary derivatives fixed to 1: softplus(boundary) + min_derivative = 1.
    let boundary = ((1.0 - c.min_derivative).exp() - 1.0).ln();
    let derivatives = params.narrow_last(2 * k, k - 1).pad_last(1, 1, boundary).softplus().add_scalar(c.min_derivative);
    Knots { cumwidths, widths, cumheights, heights, derivatives }
}

/// Index `[.., 1]` of the bin that holds `x` (`[..]`) among knots `[.., K + 1]`: the number of interior
/// knots at or below `x`.
fn bin_index(x: &Tensor, knots: &Tensor, k: i64) -> Tensor {
    let interior = knots.narrow(-1, 1, k - 1);
    x.unsqueeze(-1).ge_tensor(&interior).sum_dim_intlist(-1, true, Kind::Int64)
}

/// The spline applied elementwise to `x` (`[B, m]`) with parameters `params` (`[B, m, 3K - 1]`).
///
/// Returns `y` (`[B, m]`, with tangents if `x` or `params` carry any) and `log dy/dx` (`[B, m]`, primal).
pub fn rq_spline(x: &Dual, params: &Dual, c: &SplineConfig) -> (Dual, Tensor) {
    let b = c.tail_bound;
    let inside = x.v.ge(-b).logical_and(&x.v.le(b));
    let shape = x.v.size();
    let xs = Dual::new(x.v.clamp(-b, b), x.t.as_ref().map(|t| t * 1)).reshape(&[shape[0], shape[1], 1]);
    let kn = knots(params, c);
    let idx = bin_index(&xs.v.squeeze_dim(-1), &kn.cumwidths.v, c.bins);
    let cw = kn.cumwidths.gather_last(&idx);
    let w = kn.widths.gather_last(&idx);
    let ch = kn.cumheights.gather_last(&idx);
    let h = kn.heights.gather_last(&idx);
    let delta = h.div(&w);
    let d0 = kn.derivatives.gather_last(&idx);
    let d1 = kn.derivatives.gather_last(&(&idx + 1));

    let theta = xs.sub(&cw).div(&w);
    let one_minus = theta.one_minus();
    let tomt = theta.mul(&one_minus);
    let num = h.mul(&delta.mul(&theta.square()).add(&d0.mul(&tomt)));
    let den = delta.add(&d0.add(&d1).sub(&delta.scale(2.0)).mul(&tomt));
    let y = ch.add(&num.div(&den)).reshape(&shape);

    let deriv_num =
        delta.v.square() * (&d1.v * theta.v.square() + &delta.v * &tomt.v * 2.0 + &d0.v * one_minus.v.square());
    let logdet = (deriv_num.log() - den.v.log() * 2.0).reshape(&shape);
    let y = y.select_where(&inside, x);
    let logdet = logdet.where_self(&inside, &logdet.zeros_like());
    (y, logdet)
}

/// The inverse of [`rq_spline`]: `x` (`[B, m]`) with `rq_spline(x) = y`, and `log dx/dy` (`[B, m]`).
pub fn rq_spline_inverse(y: &Tensor, params: &Tensor, c: &SplineConfig) -> (Tensor, Tensor) {
    let b = c.tail_bound;
    let inside = y.ge(-b).logical_and(&y.le(b));
    let kn = knots(&Dual::constant(params.shallow_clone()), c);
    let ys = y.clamp(-b, b).unsqueeze(-1);
    let idx = bin_index(&ys.squeeze_dim(-1), &kn.cumheights.v, c.bins);
    let g = |d: &Dual| d.v.gather(-1, &idx, false);
    let (cw, w, ch, h) = (g(&kn.cumwidths), g(&kn.widths), g(&kn.cumheights), g(&kn.heights));
    let (d0, d1) = (g(&kn.derivatives), kn.derivatives.v.gather(-1, &(&idx + 1), false));
    let delta = &h / &w;

    let dy = &ys - &ch;
    let s = &d1 + &d0 - &delta * 2.0;
    let a = &h * (&delta - &d0) + &dy * &s;
    let bq = &h * &d0 - &dy * &s;
    let cq = -(&delta * &dy);
    let disc = (bq.square() - &a * &cq * 4.0).clamp_min(0.0);
    let root = (&cq * 2.0) / (-&bq - disc.sqrt());
    let x = (&root * &w + &cw).squeeze_dim(-1);

    let one_minus = -&root + 1.0;
    let tomt = &root * &one_minus;
    let den = &delta + &s * &tomt;
    let deriv_num = delta.square() * (&d1 * root.square() + &delta * &tomt * 2.0 + &d0 * one_minus.square());
    let logdet = (den.log() * 2.0 - deriv_num.log()).squeeze_dim(-1);
    let x = x.where_self(&inside, y);
    let logdet = logdet.where_self(&inside, &logdet.zeros_like());
    (x, logdet)
}
