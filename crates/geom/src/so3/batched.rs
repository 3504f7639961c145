//! Batched, differentiable SO(3) geometry on tensors: the twins of the per-point functions in the parent
//! module, and the [`TensorManifold`] impl of [`So3`].
//!
//! Every function keeps the dtype and device of its input and stays finite, in values and gradients, at the
//! singular points (angle 0, angle pi, the zero rotation vector): the branch not taken is always evaluated
//! with a safe denominator, so that `where` cannot pass a NaN gradient on.

use super::{So3, SMALL_ANGLE};
use crate::check::{assert_batch_shape, assert_same_shape, validate_batch};
use crate::tensor_ops::{safe_denominator, select};
use crate::{Result, TensorManifold, TensorUniformSampler};
use tch::{Device, Kind, Tensor};

/// A squared norm below which a vector counts as zero, representable in `kind`.
fn tiny_sq(kind: Kind) -> f64 {
    match kind {
        Kind::Double => 1e-200,
        Kind::Half => 1e-7,
        _ => 1e-30,
    }
}

/// Euclidean norm over dimension `dim` (dropped), with value and gradient 0 at 0 in every dtype.
///
/// (`tensor_ops::safe_norm_keepdim` compares against 1e-300, which rounds to 0 in Float.)
pub(crate) fn safe_norm(x: &Tensor, dim: i64) -> Tensor {
    let sq = x.square().sum_dim_intlist([dim].as_slice(), false, None);
    let ok = sq.gt(tiny_sq(x.kind()));
    let safe_sq = sq.where_self(&ok, &sq.ones_like());
    safe_sq.sqrt().where_self(&ok, &sq.zeros_like())
}

/// Entry (i, j) of every matrix of a `[B, 3, 3]` batch, as `[B]`.
fn entry(a: &Tensor, i: i64, j: i64) -> Tensor {
    a.select(1, i).select(1, j)
}

/// Transpose of the last two dimensions.
fn tr(a: &Tensor) -> Tensor {
    a.transpose(-1, -2)
}

/// (tr M - 1) / 2 of a `[B, 3, 3]` batch, as `[B]`.
fn half_trace_minus_one(m: &Tensor) -> Tensor {
    (m.diagonal(0, -2, -1).sum_dim_intlist([-1i64].as_slice(), false, None) - 1.0) * 0.5
}

/// Skew-symmetric matrices of rotation vectors: `hat_t(w) v = w x v` row by row.
///
/// `w: [B, 3]` -> `[B, 3, 3]`, any float dtype, same dtype and device as `w`; linear, so differentiable
/// everywhere.
pub fn hat_t(w: &Tensor) -> Tensor {
    assert_batch_shape("so3::hat_t", "w", w, &[3]);
    let (x, y, z) = (w.select(1, 0), w.select(1, 1), w.select(1, 2));
    let o = x.zeros_like();
    Tensor::stack(&[&o, &(-&z), &y, &z, &o, &(-&x), &(-&y), &x, &o], 1).view([w.size()[0], 3, 3])
}

/// Rotation vectors of the skew-symmetric parts: `vee_t(a) = vee_t((a - a^T) / 2)`, `vee_t(hat_t(w)) = w`.
///
/// `a: [B, 3, 3]` -> `[B, 3]`, any float dtype, same dtype and device as `a`; linear.
pub fn vee_t(a: &Tensor) -> Tensor {
    assert_batch_shape("so3::vee_t", "a", a, &[3, 3]);
    let d = |i, j, k, l| entry(a, i, j) - entry(a, k, l);
    Tensor::stack(&[d(2, 1, 1, 2), d(0, 2, 2, 0), d(1, 0, 0, 1)], 1) * 0.5
}

/// Rotations by the angles |w| about the axes w / |w| (Rodrigues' formula with a Taylor branch near 0).
///
/// `w: [B, 3]` -> `[B, 3, 3]`, any float dtype, same dtype and device as `w`. Finite values and gradients
/// everywhere, including w = 0.
pub fn expm_t(w: &Tensor) -> Tensor {
    assert_batch_shape("so3::expm_t", "w", w, &[3]);
    let t2 = w.square().sum_dim_intlist([1i64].as_slice(), true, None).unsqueeze(-1); // [B, 1, 1]
    let small = t2.lt(SMALL_ANGLE * SMALL_ANGLE);
    let t2_safe = t2.where_self(&small.logical_not(), &t2.ones_like());
    let t = t2_safe.sqrt();
    let a_reg = t.sin() / &t;
    let b_reg = (&t * 0.5).sin().square() * 2.0 / &t2_safe;
    let a_tay = ((&t2 * (-1.0 / 5040.0) + 1.0 / 120.0) * &t2 - 1.0 / 6.0) * &t2 + 1.0;
    let b_tay = ((&t2 * (-1.0 / 40320.0) + 1.0 / 720.0) * &t2 - 1.0 / 24.0) * &t2 + 0.5;
    let a = select(&small, &a_tay, &a_reg);
    let b = select(&small, &b_tay, &b_reg);
    let k = hat_t(w);
    let k2 = k.matmul(&k);
    Tensor::eye(3, (w.kind(), w.device())) + a * k + b * k2
}

/// Rotation angles in [0, pi], as atan2(|vee(r)|, (tr r - 1) / 2).
///
/// `r: [B, 3, 3]` -> `[B]`, any float dtype, same dtype and device as `r`. Finite values and gradients
/// everywhere; at angle 0 and angle pi, where the angle is not differentiable, the gradient is the
/// subgradient through the trace alone.
pub fn rotation_angle_t(r: &Tensor) -> Tensor {
    assert_batch_shape("so3::rotation_angle_t", "r", r, &[3, 3]);
    safe_norm(&vee_t(r), 1).atan2(&half_trace_minus_one(r))
}

/// Rotation vectors of rotation matrices, |logm_t(r)| in [0, pi]; the twin of [`super::logm`].
///
/// `r: [B, 3, 3]` -> `[B, 3]`, any float dtype, same dtype and device as `r`. Three branches selected by
/// `where`: a Taylor expansion below angle 0.01, angle * vee / |vee| up to pi/2, and beyond pi/2 the axis
/// read from the largest column of (r + r^T)/2 - cos(angle) I = (1 - cos) a a^T with its sign from the
/// skew part; the last branch keeps Float accurate near pi. Finite values and gradients everywhere,
/// including angle 0 and angle pi.
pub fn logm_t(r: &Tensor) -> Tensor {
    assert_batch_shape("so3::logm_t", "r", r, &[3, 3]);
    let (kind, device) = (r.kind(), r.device());
    let n = r.size()[0];
    let s = vee_t(r); // [B, 3] = sin(angle) axis
    let c = half_trace_minus_one(r); // [B] = cos(angle)
    let sn = safe_norm(&s, 1);
    let theta = sn.atan2(&c);

    // Angle below pi/2: angle / sin(angle) * s, by Taylor near 0.
    let t2 = theta.square();
    let f_tay = ((&t2 * (31.0 / 15120.0) + 7.0 / 360.0) * &t2 + 1.0 / 6.0) * &t2 + 1.0;
    let f_reg = &theta / safe_denominator(&sn, 0.5 * SMALL_ANGLE);
    let f = select(&theta.lt(SMALL_ANGLE), &f_tay, &f_reg);
    let w_small = &s * f.unsqueeze(-1);

    // Angle above pi/2: the axis from the symmetric part.
    let b = (r + tr(r)) * 0.5 - Tensor::eye(3, (kind, device)) * c.view([n, 1, 1]);
    let k = b.diagonal(0, -2, -1).argmax(-1, true); // [B, 1]
    let col = b.gather(1, &k.unsqueeze(-1).expand([n, 1, 3], false), false).squeeze_dim(1); // row k = column k
    let axis = &col / safe_denominator(&safe_norm(&col, 1), 1e-6).unsqueeze(-1);
    let flip = (&axis * &s).sum_dim_intlist([-1i64].as_slice(), false, None).lt(0.0).to_kind(kind);
    let w_pi = axis * (&theta * (flip * -2.0 + 1.0)).unsqueeze(-1);

    select(&c.lt(0.0).unsqueeze(-1), &w_pi, &w_small)
}

/// Closest rotations in Frobenius norm, U diag(1, 1, det(U V^T)) V^T for the SVD x = U S V^T.
///
/// `x: [B, 3, 3]` -> `[B, 3, 3]`, any float dtype (Half and BFloat16 are decomposed in Float), same dtype
/// and device as `x`. Non-finite input makes libtorch's SVD fail (a panic): validate first.
///
/// Gradients: the SVD is taken on the detached input and the first derivative of the polar factor,
/// dR = R Omega with Omega P + P Omega = R^T dX - dX^T R (P = R^T x), is attached as a linear term, so
/// that gradients stay finite at repeated singular values (every rotation has S = I, where the backward of
/// `linalg_svd` gives NaN). First derivatives are exact; second derivatives through this function are not
/// provided. Where the closest rotation is not unique (rank-deficient input, or det < 0 with the two
/// smallest singular values equal), the value is one of the closest rotations and the gradient is large but
/// finite.
pub fn project_to_so3_t(x: &Tensor) -> Tensor {
    assert_batch_shape("so3::project_to_so3_t", "x", x, &[3, 3]);
    let kind = x.kind();
    let work = if matches!(kind, Kind::Half | Kind::BFloat16) { Kind::Float } else { kind };
    let x0 = x.detach().to_kind(work);
    // `torch.svd` rather than `linalg_svd`: tch passes linalg_svd's optional `driver` as a string, and any
    // string (even empty) is rejected on CPU.
    let (u, s, v) = x0.svd(true, true);
    let vh = tr(&v);
    // Singular values are in descending order: the sign goes to the last singular vector.
    let det = Tensor::linalg_det(&u.matmul(&vh)); // [B], +-1
    let ones = det.ones_like();
    let d = select(&det.lt(0.0), &(-&ones), &ones);
    let signs = Tensor::stack(&[&ones, &ones, &d], 1); // [B, 3]
    let r0 = (&u * signs.unsqueeze(1)).matmul(&vh);
    if !x.requires_grad() {
        return r0.to_kind(kind);
    }
    // P = R^T x = V diag(s * signs) V^T; in the eigenbasis Omega'_ij = A'_ij / (p_i + p_j).
    let p = &s * &signs;
    let dx = (x - x.detach()).to_kind(work);
    let g = tr(&r0).matmul(&dx);
    let a = vh.matmul(&(&g - tr(&g))).matmul(&tr(&vh));
    let den = p.unsqueeze(-1) + p.unsqueeze(-2);
    let omega = tr(&vh).matmul(&(a / safe_denominator(&den, 1e-6))).matmul(&vh);
    (&r0 + r0.matmul(&omega)).to_kind(kind)
}

/// Rotation matrices of quaternions `(w, x, y, z)`, normalised inside; the zero quaternion gives the
/// identity.
///
/// `q: [B, 4]` -> `[B, 3, 3]`, any float dtype, same dtype and device as `q`; differentiable with finite
/// gradients everywhere.
pub fn quaternion_to_matrix_t(q: &Tensor) -> Tensor {
    assert_batch_shape("so3::quaternion_to_matrix_t", "q", q, &[4]);
    let norm = safe_norm(q, 1);
    let q = q / safe_denominator(&norm, tiny_sq(q.kind()).sqrt()).unsqueeze(-1);
    let (w, x, y, z) = (q.select(1, 0), q.select(1, 1), q.select(1, 2), q.select(1, 3));
    let entries = [
        1.0 - (&y * &y + &z * &z) * 2.0,
        (&x * &y - &w * &z) * 2.0,
        (&x * &z + &w * &y) * 2.0,
        (&x * &y + &w * &z) * 2.0,
        1.0 - (&x * &x + &z * &z) * 2.0,
        (&y * &z - &w * &x) * 2.0,
        (&x * &z - &w * &y) * 2.0,
        (&y * &z + &w * &x) * 2.0,
        1.0 - (&x * &x + &y * &y) * 2.0,
    ];
    Tensor::stack(&entries, 1).view([q.size()[0], 3, 3])
}

/// Asserts that `x` and `v` are both `[B, 3, 3]` batches of the same size.
#[track_caller]
fn assert_pair(op: &str, (xn, x): (&str, &Tensor), (vn, v): (&str, &Tensor)) {
    assert_batch_shape(op, xn, x, &[3, 3]);
    assert_batch_shape(op, vn, v, &[3, 3]);
    assert_same_shape(op, x, v);
}

impl TensorManifold for So3 {
    fn point_shape(&self) -> Vec<i64> {
        vec![3, 3]
    }

    /// [`project_to_so3_t`].
    fn project_t(&self, x: &Tensor) -> Tensor {
        project_to_so3_t(x)
    }

    /// R skew(R^T V).
    fn tangent_project_t(&self, x: &Tensor, v: &Tensor) -> Tensor {
        assert_pair("SO(3) tangent_project_t", ("x", x), ("v", v));
        let m = tr(x).matmul(v);
        x.matmul(&((&m - tr(&m)) * 0.5))
    }

    /// R Expm(vee(R^T V)).
    fn exp_t(&self, x: &Tensor, v: &Tensor) -> Tensor {
        assert_pair("SO(3) exp_t", ("x", x), ("v", v));
        x.matmul(&expm_t(&vee_t(&tr(x).matmul(v))))
    }

    /// R hat(logm(R^T Q)).
    fn log_t(&self, x: &Tensor, y: &Tensor) -> Tensor {
        assert_pair("SO(3) log_t", ("x", x), ("y", y));
        x.matmul(&hat_t(&logm_t(&tr(x).matmul(y))))
    }

    /// The rotation angle of R^T Q, in [0, pi].
    fn dist_t(&self, x: &Tensor, y: &Tensor) -> Tensor {
        assert_pair("SO(3) dist_t", ("x", x), ("y", y));
        rotation_angle_t(&tr(x).matmul(y))
    }

    /// Frobenius distance to [`project_to_so3_t`]`(x)`.
    fn distance_to_manifold_t(&self, x: &Tensor) -> Tensor {
        assert_batch_shape("SO(3) distance_to_manifold_t", "x", x, &[3, 3]);
        safe_norm(&(x - project_to_so3_t(x)).view([x.size()[0], 9]), 1)
    }

    fn validate(&self, arg: &str, x: &Tensor, tol: Option<f64>) -> Result<()> {
        validate_batch(arg, "SO(3)", x, &[3, 3], tol, |x| self.distance_to_manifold_t(x))
    }
}

impl TensorUniformSampler for So3 {
    /// Haar-distributed rotations from normalised 4-d Gaussians (uniform unit quaternions).
    fn sample_uniform_t(&self, n: i64, kind: Kind, device: Device) -> Tensor {
        quaternion_to_matrix_t(&Tensor::randn([n, 4], (kind, device)))
    }
}
