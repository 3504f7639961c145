//! The batched twin of the per-point evaluation, written as tensor operations (used for tensors that are
//! not on the CPU, and available on every device for comparison).
//!
//! Same method as [`super::fisher`]: proper SVD (here `torch.linalg.svd` plus sign fixes), the Taylor
//! series for s1 <= [`SERIES_MAX`] and the 24-node Talbot rule otherwise, vectorised over `[B, nodes]`.
//! Every intermediate is computed in f64, whatever the input dtype (single precision would lose the
//! complement 1 - e_k at small s), and the result is cast back.

use super::fisher::{talbot_rule, SERIES_MAX, S_MAX, TALBOT_NODES};
use tch::{Kind, Tensor};

/// E[R | F] = U diag(d) V^T for `x: [B, 3, 3]` and the factor `k = alpha / sigma^2: [B]` (F = k x), in f64 on
/// the device of `x`; `[B, 3, 3]`, f64, detached. Rows with a non-finite entry in `x` or `k`, or `k < 0`, give
/// NaN.
pub(crate) fn posterior_mean_f64(x: &Tensor, k: &Tensor) -> Tensor {
    // Rows with a non-finite entry or factor would make the SVD fail: they are evaluated at 0 and set to NaN.
    let x0 = x.detach().to_kind(Kind::Double);
    let k = k.detach().to_kind(Kind::Double);
    let valid = x0.isfinite().flatten(1, 2).all_dim(1, false).logical_and(&k.isfinite()).logical_and(&k.ge(0.0));
    let x0 = x0.where_self(&valid.view([-1, 1, 1]), &x0.zeros_like());
    let k = k.where_self(&valid, &k.zeros_like());
    // `torch.svd` rather than `torch.linalg.svd`: the tch binding of the latter always passes a `driver`
    // string, which libtorch rejects for CPU tensors.
    let (u, sv, v) = x0.svd(true, true);
    let vh = v.transpose(-2, -1);
    // Proper factors: flip the last column of U (row of V^T) when its determinant is -1, and move the sign
    // to s3. The singular values stay sorted, and |s3| <= s2.
    let du = Tensor::linalg_det(&u).sign();
    let dv = Tensor::linalg_det(&vh).sign();
    let ones = du.ones_like();
    let u = &u * Tensor::stack(&[&ones, &ones, &du], 1).unsqueeze(1);
    let vh = &vh * Tensor::stack(&[&ones, &ones, &dv], 1).unsqueeze(2);
    let sv = &sv * Tensor::stack(&[&ones, &ones, &(&du * &dv)], 1);
    let s = (sv * k.unsqueeze(1)).nan_to_num(0.0, S_MAX, -S_MAX).clamp(-S_MAX, S_MAX);
    let d = grad_log_normaliser(&s);
    let mean = u.matmul(&(d.unsqueeze(2) * vh));
    mean.where_self(&valid.view([-1, 1, 1]), &mean.full_like(f64::NAN))
}

/// d = grad ln c for proper singular values `s: [B, 3]` (f64) -> `[B, 3]`.
fn grad_log_normaliser(s: &Tensor) -> Tensor {
    let (s1, s2, s3) = (s.select(1, 0), s.select(1, 1), s.select(1, 2));
    let talbot = talbot_d(&s1, &s2, &s3);
    let series = series_d(&s1, &s2, &s3);
    series.where_self(&s1.le(SERIES_MAX).unsqueeze(1), &talbot)
}

/// The Taylor-series branch (as in `fisher::series`): `[B]` each -> `[B, 3]`.
fn series_d(s1: &Tensor, s2: &Tensor, s3: &Tensor) -> Tensor {
    let p2 = s1.square() + s2.square() + s3.square();
    let e3 = s1 * s2 * s3;
    let p4 = s1.pow_tensor_scalar(4) + s2.pow_tensor_scalar(4) + s3.pow_tensor_scalar(4);
    let p2p2 = p2.square();
    let dl_dp2 = &p2 / 180.0 - &e3 / 90.0 + &p4 / 1260.0 - &p2p2 / 756.0 - &p2 * &e3 / 15120.0 + e3.square() / 720.0
        - &p2 * &p4 * (22.0 / 604_800.0)
        + &p2p2 * &p2 / 11200.0
        + 1.0 / 6.0;
    let dl_de3 = -&p2 / 90.0 - &e3 * (46.0 / 2520.0) + &p4 * (11.0 / 10080.0) - &p2p2 / 30240.0
        + &p2 * &e3 * (2.0 / 720.0)
        + 1.0 / 6.0;
    let dl_dp4 =
        &p2 / 1260.0 + &e3 * (11.0 / 10080.0) - &p4 * (74.0 / 1_209_600.0) - &p2p2 * (11.0 / 604_800.0) - 1.0 / 120.0;
    let dk =
        |sk: &Tensor, others: Tensor| &dl_dp2 * sk * 2.0 + &dl_de3 * others + &dl_dp4 * sk.pow_tensor_scalar(3) * 4.0;
    Tensor::stack(&[dk(s1, s2 * s3), dk(s2, s1 * s3), dk(s3, s1 * s2)], 1)
}

/// The principal square root of w = (re, im) with im > 0 (both parts of the root are then positive).
fn sqrt_principal(re: &Tensor, im: &Tensor) -> (Tensor, Tensor) {
    let m = (re.square() + im.square()).sqrt();
    let p = ((m + re.abs()) * 0.5).sqrt();
    let q = im / (&p * 2.0);
    let pos = re.ge(0.0);
    (p.where_self(&pos, &q), q.where_self(&pos, &p))
}

/// Complex product.
fn cmul(a: &(Tensor, Tensor), b: &(Tensor, Tensor)) -> (Tensor, Tensor) {
    (&a.0 * &b.0 - &a.1 * &b.1, &a.0 * &b.1 + &a.1 * &b.0)
}

/// The Talbot branch: `[B]` each -> `[B, 3]`.
fn talbot_d(s1: &Tensor, s2: &Tensor, s3: &Tensor) -> Tensor {
    let device = s1.device();
    let (z_re, z_im, w_re, w_im) = talbot_rule();
    let row = |v: [f64; TALBOT_NODES]| Tensor::from_slice(&v).to_device(device).unsqueeze(0); // [1, N]
    let (zr, zi, wr, wi) = (row(z_re), row(z_im), row(w_re), row(w_im));
    let mu = [(s2 + s3) * 2.0, (s1 + s3) * 2.0, (s1 + s2) * 2.0].map(|m| m.clamp_min(0.0).unsqueeze(1)); // [B, 1]
    let t = mu.each_ref().map(|m| &zr + m); // Re(z + mu_i): [B, N]
    let zi_b = zi.expand_as(&t[0]);
    // P = sqrt(z) prod_i sqrt(z + mu_i) (principal roots, all in the first quadrant since Im z > 0).
    let mut p = sqrt_principal(&zr, &zi);
    for ti in &t {
        p = cmul(&p, &sqrt_principal(ti, &zi_b));
    }
    // G = w / P.
    let n = p.0.square() + p.1.square();
    let gr = (&wr * &p.0 + &wi * &p.1) / &n;
    let gi = (&wi * &p.0 - &wr * &p.1) / &n;
    let j = gi.sum_dim_intlist(1, false, Kind::Double);
    let zi2 = zi.square();
    let q =
        t.each_ref().map(|ti| ((&gi * ti - &gr * &zi) / (ti.square() + &zi2)).sum_dim_intlist(1, false, Kind::Double));
    let e = [(&q[1] + &q[2]) / &j, (&q[0] + &q[2]) / &j, (&q[0] + &q[1]) / &j];
    Tensor::stack(&e.map(|ek| -ek + 1.0), 1)
}
