//! The proper singular value decomposition of a 3x3 matrix, per point in f64.

use nalgebra::{Matrix3, Vector3};

/// Rotation sweeps of the one-sided Jacobi method before giving up (it converges quadratically: about four
/// sweeps with rotations and a last one that finds nothing to rotate, in practice).
const MAX_SWEEPS: usize = 20;

/// A proper SVD x = U diag(s) V^T with U, V in SO(3) and s1 >= s2 >= |s3| (s3 < 0 exactly when det x < 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProperSvd {
    /// Left factor, a rotation.
    pub u: Matrix3<f64>,
    /// Signed singular values, s1 >= s2 >= |s3|.
    pub s: [f64; 3],
    /// Right factor, a rotation.
    pub v: Matrix3<f64>,
}

impl ProperSvd {
    /// U diag(d) V^T.
    pub fn compose(&self, d: [f64; 3]) -> Matrix3<f64> {
        self.u * Matrix3::from_diagonal(&Vector3::from(d)) * self.v.transpose()
    }
}

/// The proper SVD of `x` by the one-sided Jacobi method (Hestenes), which computes singular values to high
/// relative accuracy and orthogonal factors to rounding, also for repeated or zero singular values.
///
/// Rank-deficient input gets completed factors (for x = 0: U = V = I, s = 0). Panics naming `x` if it is
/// not finite.
#[track_caller]
pub fn proper_svd(x: &Matrix3<f64>) -> ProperSvd {
    geom::check::assert_finite("so3::proper_svd", "x", x.as_slice());
    let max = x.amax();
    if max == 0.0 {
        return ProperSvd { u: Matrix3::identity(), s: [0.0; 3], v: Matrix3::identity() };
    }
    // Scale by a power of two (exact) so that no square over- or underflows.
    let scale = if (1e-50..1e50).contains(&max) { 1.0 } else { max.log2().floor().exp2() };
    // Columns of A = x / scale and of V, as plain arrays.
    let mut a = [0usize, 1, 2].map(|j| [x[(0, j)] / scale, x[(1, j)] / scale, x[(2, j)] / scale]);
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let dot = |p: &[f64; 3], q: &[f64; 3]| p[0] * q[0] + p[1] * q[1] + p[2] * q[2];
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            let alpha = dot(&a[p], &a[p]);
            let beta = dot(&a[q], &a[q]);
            let gamma = dot(&a[p], &a[q]);
            // Columns orthogonal to rounding: |gamma| <= eps sqrt(alpha beta), compared in squares.
            if gamma * gamma <= f64::EPSILON * f64::EPSILON * alpha * beta {
                continue;
            }
            rotated = true;
            let zeta = (beta - alpha) / (2.0 * gamma);
            let t =
                if zeta.abs() > 1e150 { 0.5 / zeta } else { zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt()) };
            let c = 1.0 / (1.0 + t * t).sqrt();
            let sn = c * t;
            for m in [&mut a, &mut v] {
                for i in 0..3 {
                    let (xp, xq) = (m[p][i], m[q][i]);
                    m[p][i] = c * xp - sn * xq;
                    m[q][i] = sn * xp + c * xq;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    // Sort the columns by norm, descending.
    let norms = a.map(|col| dot(&col, &col).sqrt());
    let mut order = [0usize, 1, 2];
    order.sort_by(|&i, &j| norms[j].total_cmp(&norms[i]));
    let col = |m: &[[f64; 3]; 3], k: usize| Vector3::from(m[order[k]]);
    let (a1, a2, a3) = (col(&a, 0), col(&a, 1), col(&a, 2));
    let (n1, n2) = (norms[order[0]], norms[order[1]]);
    let u1 = a1 / n1;
    // A second column below 1e-200 of the first is treated as zero: any unit vector orthogonal to u1 serves.
    let u2 = if n2 > 1e-200 * n1 { a2 / n2 } else { any_orthogonal(&u1) };
    let u3 = u1.cross(&u2);
    // a3 is parallel to u3 (up to rounding); the clamp keeps |s3| <= s2 when the two are equal.
    let mut s3 = a3.dot(&u3).clamp(-n2, n2);
    let (v1, v2, mut v3) = (col(&v, 0), col(&v, 1), col(&v, 2));
    if v1.cross(&v2).dot(&v3) < 0.0 {
        v3 = -v3;
        s3 = -s3;
    }
    ProperSvd {
        u: Matrix3::from_columns(&[u1, u2, u3]),
        s: [n1 * scale, n2 * scale, s3 * scale],
        v: Matrix3::from_columns(&[v1, v2, v3]),
    }
}

/// A unit vector orthogonal to the unit vector `u`.
fn any_orthogonal(u: &Vector3<f64>) -> Vector3<f64> {
    let i = u.iamin();
    let mut e = Vector3::zeros();
    e[i] = 1.0;
    let w = e - u * u[i];
    w / w.norm()
}
