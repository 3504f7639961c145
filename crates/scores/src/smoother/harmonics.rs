//! Real orthonormal spherical harmonics on S^2 up to a degree L, with their gradients.
//!
//! Convention: orthonormal w.r.t. the area measure of the unit sphere (int_{S^2} Y_lm Y_l'm' dA =
//! delta_ll' delta_mm'), so that the addition theorem reads
//!
//!   sum_{m=-l}^{l} Y_lm(x) Y_lm(y) = (2l + 1)/(4 pi) P_l(<x, y>).
//!
//! For x = (sin th cos ph, sin th sin ph, cos th) = (x, y, z):
//!
//! - Y_l0 = Q_l^0(z),
//! - Y_lm = sqrt(2) Q_l^m(z) C_m(x, y),  Y_l,-m = sqrt(2) Q_l^m(z) S_m(x, y)  for m > 0,
//!
//! where C_m + i S_m = (x + i y)^m (so C_m = sin^m th cos(m ph), S_m = sin^m th sin(m ph), polynomials,
//! no angles and no pole singularity) and Q_l^m(z) = N_lm P_l^m(z) / sin^m th is the fully normalised
//! associated Legendre function with its sin^m factor removed (no Condon-Shortley phase), N_lm =
//! sqrt((2l+1)/(4 pi) (l-m)!/(l+m)!). It is a polynomial in z, computed by the stable normalised
//! recurrences
//!
//! - Q_0^0 = 1/sqrt(4 pi),  Q_m^m = sqrt((2m+1)/(2m)) Q_{m-1}^{m-1},
//! - Q_{m+1}^m = sqrt(2m+3) z Q_m^m,
//! - Q_l^m = a_lm (z Q_{l-1}^m - b_lm Q_{l-2}^m),  a_lm = sqrt((4l^2-1)/(l^2-m^2)),
//!   b_lm = sqrt(((l-1)^2-m^2)/(4(l-1)^2-1)).
//!
//! Every value is a polynomial in (x, y, z), so its ambient gradient is exact and cheap: dQ/dz follows by
//! differentiating the recurrences, grad C_m = m (C_{m-1}, -S_{m-1}, 0), grad S_m = m (S_{m-1}, C_{m-1}, 0).
//! The Riemannian gradient on S^2 is the tangent projection v - <x, v> x of the ambient gradient (true for
//! any smooth extension off the sphere). The functions here expect unit vectors; callers normalise.
//!
//! Index of (l, m) in a flat array: l^2 + l + m, so degree L has (L+1)^2 entries.

use crate::{Result, ScoreError};
use rayon::prelude::*;
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// Largest supported degree (the recurrences stay finite far beyond; the cap bounds memory and time).
pub const MAX_DEGREE: usize = 2000;

/// The number of real spherical harmonics of degree at most `degree`: (L+1)^2.
pub fn n_harmonics(degree: usize) -> usize {
    (degree + 1) * (degree + 1)
}

/// The flat index of (l, m), |m| <= l: l^2 + l + m.
pub fn index(l: usize, m: i64) -> usize {
    assert!(m.unsigned_abs() as usize <= l, "harmonics::index: |m| = {} exceeds l = {l}", m.unsigned_abs());
    ((l * l + l) as i64 + m) as usize
}

/// The Legendre polynomial P_l(z), by the three-term recurrence.
pub fn legendre(l: usize, z: f64) -> f64 {
    let (mut p0, mut p1) = (1.0, z);
    if l == 0 {
        return 1.0;
    }
    for k in 2..=l {
        let kf = k as f64;
        let p2 = ((2.0 * kf - 1.0) * z * p1 - (kf - 1.0) * p0) / kf;
        p0 = p1;
        p1 = p2;
    }
    p1
}

/// Real orthonormal spherical harmonics up to a fixed degree, with the recurrence coefficients
/// precomputed (see the [module documentation](self) for the conventions).
///
/// ```
/// use scores::smoother::harmonics::SphericalHarmonics;
///
/// let sh = SphericalHarmonics::new(2).unwrap();
/// let mut y = vec![0.0; sh.len()];
/// sh.eval(&[0.0, 0.0, 1.0], &mut y);
/// // Y_00 = 1/sqrt(4 pi); at the north pole only the m = 0 harmonics are non-zero.
/// assert!((y[0] - 1.0 / (4.0 * std::f64::consts::PI).sqrt()).abs() < 1e-15);
/// assert!((y[2] - (3.0 / (4.0 * std::f64::consts::PI)).sqrt()).abs() < 1e-15);
/// ```
#[derive(Debug, Clone)]
pub struct SphericalHarmonics {
    degree: usize,
    /// The constants Q_m^m (the sectoral values, independent of z), m = 0..=L.
    diag: Vec<f64>,
    /// a_lm and b_lm, flat in triangular order: tri(l, m) = l (l + 1) / 2 + m, for m <= l.
    a: Vec<f64>,
    b: Vec<f64>,
}

fn tri(l: usize, m: usize) -> usize {
    l * (l + 1) / 2 + m
}

impl SphericalHarmonics {
    /// Harmonics of degree 0..=`degree`; errors naming `degree` above [`MAX_DEGREE`].
    pub fn new(degree: usize) -> Result<Self> {
        if degree > MAX_DEGREE {
            return Err(ScoreError::invalid("degree", degree, &format!("a degree L <= {MAX_DEGREE}")));
        }
        let mut diag = vec![0.0; degree + 1];
        diag[0] = 1.0 / (4.0 * PI).sqrt();
        for m in 1..=degree {
            let mf = m as f64;
            diag[m] = diag[m - 1] * ((2.0 * mf + 1.0) / (2.0 * mf)).sqrt();
        }
        let size = tri(degree, degree) + 1;
        let (mut a, mut b) = (vec![0.0; size], vec![0.0; size]);
        for l in 0..=degree {
            for m in 0..=l {
                let (lf, mf) = (l as f64, m as f64);
                if l >= m + 2 {
                    a[tri(l, m)] = ((4.0 * lf * lf - 1.0) / (lf * lf - mf * mf)).sqrt();
                    let l1 = lf - 1.0;
                    b[tri(l, m)] = ((l1 * l1 - mf * mf) / (4.0 * l1 * l1 - 1.0)).sqrt();
                }
            }
        }
        Ok(SphericalHarmonics { degree, diag, a, b })
    }

    /// The degree L.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// The number of harmonics, (L+1)^2.
    pub fn len(&self) -> usize {
        n_harmonics(self.degree)
    }

    /// Always false: degree 0 already has one harmonic.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// All Y_lm(x), l <= L, into `out` (length (L+1)^2, indexed by [`index`]). `x` is a unit vector.
    pub fn eval(&self, x: &[f64; 3], out: &mut [f64]) {
        assert_eq!(out.len(), self.len(), "SphericalHarmonics::eval: `out` has the wrong length");
        self.visit::<false>(x, |i, v, _| out[i] = v);
    }

    /// All Y_lm(x) into `out` and their ambient gradients into `grad` (length 3 (L+1)^2, entry
    /// 3 index(l, m) + k is d Y_lm / d x_k of the polynomial extension). Project onto the tangent space
    /// at x for the Riemannian gradient.
    pub fn eval_with_grad(&self, x: &[f64; 3], out: &mut [f64], grad: &mut [f64]) {
        assert_eq!(out.len(), self.len(), "SphericalHarmonics::eval_with_grad: `out` has the wrong length");
        assert_eq!(grad.len(), 3 * self.len(), "SphericalHarmonics::eval_with_grad: `grad` has the wrong length");
        self.visit::<true>(x, |i, v, g| {
            out[i] = v;
            grad[3 * i..3 * i + 3].copy_from_slice(&g);
        });
    }

    /// sum_lm coef_lm Y_lm(x) and its ambient gradient (zero unless `GRAD`), without storing the
    /// harmonics: `coef` has length (L+1)^2.
    pub fn contract<const GRAD: bool>(&self, x: &[f64; 3], coef: &[f64]) -> (f64, [f64; 3]) {
        assert_eq!(coef.len(), self.len(), "SphericalHarmonics::contract: `coef` has the wrong length");
        let mut value = 0.0;
        let mut grad = [0.0; 3];
        self.visit::<GRAD>(x, |i, v, g| {
            let c = coef[i];
            value += c * v;
            if GRAD {
                grad[0] += c * g[0];
                grad[1] += c * g[1];
                grad[2] += c * g[2];
            }
        });
        (value, grad)
    }

    /// Calls `sink(index(l, m), Y_lm(x), ambient grad Y_lm(x))` for every l <= L, |m| <= l (the gradient
    /// is left at zero unless `GRAD`).
    #[inline]
    fn visit<const GRAD: bool>(&self, p: &[f64; 3], mut sink: impl FnMut(usize, f64, [f64; 3])) {
        let big_l = self.degree;
        let (x, y, z) = (p[0], p[1], p[2]);
        let sqrt2 = std::f64::consts::SQRT_2;
        // (C_m, S_m) and (C_{m-1}, S_{m-1}) as m increases.
        let (mut c, mut s) = (1.0, 0.0);
        let (mut c_prev, mut s_prev) = (0.0, 0.0);
        for m in 0..=big_l {
            if m > 0 {
                let (cn, sn) = (x * c - y * s, x * s + y * c);
                c_prev = c;
                s_prev = s;
                c = cn;
                s = sn;
            }
            let mf = m as f64;
            // Gradients of sqrt(2) C_m and sqrt(2) S_m (x and y components).
            let (gcx, gcy) = (sqrt2 * mf * c_prev, -sqrt2 * mf * s_prev);
            let (gsx, gsy) = (sqrt2 * mf * s_prev, sqrt2 * mf * c_prev);
            let (c2, s2) = (sqrt2 * c, sqrt2 * s);
            // Q_l^m and dQ_l^m/dz along l = m, m+1, ...: (q1, dq1) is the latest, (q2, dq2) the one before.
            let (mut q2, mut dq2) = (0.0, 0.0);
            let (mut q1, mut dq1) = (self.diag[m], 0.0);
            for l in m..=big_l {
                if l == m + 1 {
                    let f = (2.0 * mf + 3.0).sqrt();
                    q2 = q1;
                    dq2 = dq1;
                    q1 = f * z * q2;
                    dq1 = f * q2;
                } else if l > m + 1 {
                    let (a, b) = (self.a[tri(l, m)], self.b[tri(l, m)]);
                    let q = a * (z * q1 - b * q2);
                    let dq = if GRAD { a * (q1 + z * dq1 - b * dq2) } else { 0.0 };
                    q2 = q1;
                    dq2 = dq1;
                    q1 = q;
                    dq1 = dq;
                }
                let base = l * l + l;
                if m == 0 {
                    sink(base, q1, [0.0, 0.0, dq1]);
                } else {
                    let gp = if GRAD { [q1 * gcx, q1 * gcy, dq1 * c2] } else { [0.0; 3] };
                    sink(base + m, q1 * c2, gp);
                    let gm = if GRAD { [q1 * gsx, q1 * gsy, dq1 * s2] } else { [0.0; 3] };
                    sink(base - m, q1 * s2, gm);
                }
            }
        }
    }

    /// Batched evaluation: `x: [B, 3]` (unit rows, any float dtype and device) -> `[B, (L+1)^2]` with the
    /// dtype and device of `x`. Computed on the host in f64, in parallel over rows; not differentiable.
    pub fn eval_t(&self, x: &Tensor) -> Tensor {
        geom::check::assert_batch_shape("SphericalHarmonics::eval_t", "x", x, &[3]);
        let b = x.size()[0];
        let pts = host_rows3(x);
        let k = self.len();
        let mut out = vec![0.0; pts.len() * k];
        out.par_chunks_mut(k.max(1)).zip(pts.par_iter()).for_each(|(o, p)| self.eval(p, o));
        Tensor::from_slice(&out).view([b, k as i64]).to_kind(x.kind()).to_device(x.device())
    }
}

/// The rows of a `[B, 3]` tensor as f64 triples on the host.
pub(crate) fn host_rows3(x: &Tensor) -> Vec<[f64; 3]> {
    let flat: Vec<f64> =
        Vec::<f64>::try_from(x.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double).contiguous().view([-1]))
            .expect("a Double tensor converts to Vec<f64>");
    flat.chunks_exact(3).map(|r| [r[0], r[1], r[2]]).collect()
}
