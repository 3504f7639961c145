//! The invariant checker run for every manifold, and the conformance checker between the two faces.
//!
//! Compiled only with the crate feature `proptest`. Every check takes a manifold, the inputs and a
//! tolerance, and returns `Err(message)` naming the manifold, the invariant, the size of the violation
//! and the inputs, so that inside a proptest body `check(..).map_err(TestCaseError::fail)?` reports a
//! readable failure (and `prop_assert!(r.is_ok(), "{}", r.unwrap_err())` works too).
//!
//! Tolerances are absolute, on flat ambient coordinates (Euclidean norm of the difference) or on
//! distances, and are chosen by the caller; each check documents where it applies.
//!
//! Per-point invariants (the reference face, [`Manifold`]):
//! - [`check_project`], [`check_project_closest`], [`check_distance_to_manifold`]: projection;
//! - [`check_tangent_project`]: tangent projection;
//! - [`check_exp_log`], [`check_log_exp`], [`check_dist_exp`], [`check_log`]: exp and log;
//! - [`check_dist_metric`]: distance axioms;
//! - [`check_exp_on_manifold`]: exp stays on the manifold.
//!
//! Batched against per-point (the tensor face, [`TensorManifold`]), in `Kind::Double` on the CPU:
//! - [`check_conformance`] (all operations) and one function per operation;
//! - [`check_kind_device`]: outputs keep the dtype and device of the inputs;
//! - [`check_grad_finite`]: gradients through an operation are finite.

use crate::{Manifold, TensorManifold};
use tch::{Device, Kind, Tensor};

/// The result of one check: `Err` holds a message for a test failure.
pub type CheckResult = std::result::Result<(), String>;

/// Euclidean norm of the difference of the flat coordinates of `a` and `b`.
pub fn flat_distance<M: Manifold + ?Sized>(m: &M, a: &M::Point, b: &M::Point) -> f64 {
    let (a, b) = (m.to_flat(a), m.to_flat(b));
    assert_eq!(a.len(), b.len(), "flat_distance: points of different lengths");
    a.iter().zip(&b).map(|(p, q)| (p - q).powi(2)).sum::<f64>().sqrt()
}

/// Dot product of the flat coordinates of `a` and `b` (the ambient Euclidean / Frobenius inner product).
pub fn flat_dot<M: Manifold + ?Sized>(m: &M, a: &M::Point, b: &M::Point) -> f64 {
    m.to_flat(a).iter().zip(&m.to_flat(b)).map(|(p, q)| p * q).sum()
}

fn flat_combine<M: Manifold + ?Sized>(m: &M, a: &M::Point, b: &M::Point, f: impl Fn(f64, f64) -> f64) -> M::Point {
    let flat: Vec<f64> = m.to_flat(a).iter().zip(&m.to_flat(b)).map(|(p, q)| f(*p, *q)).collect();
    m.from_flat(&flat).unwrap_or_else(|e| panic!("invariants: from_flat of {} failed: {e}", m.name()))
}

/// Riemannian norm sqrt(<v, v>_x) of a tangent vector `v` at `x`.
pub fn norm_at<M: Manifold + ?Sized>(m: &M, x: &M::Point, v: &M::Point) -> f64 {
    m.inner(x, v, v).max(0.0).sqrt()
}

fn fail<M: Manifold>(m: &M, what: &str, err: f64, tol: f64, inputs: &[(&str, &M::Point)]) -> String {
    let mut msg = format!("{}: {what}: violation {err:.3e} > tolerance {tol:.1e}", m.name());
    for (name, value) in inputs {
        msg.push_str(&format!("\n  {name} = {:?}", m.to_flat(value)));
    }
    msg
}

fn ensure<M: Manifold>(m: &M, what: &str, err: f64, tol: f64, inputs: &[(&str, &M::Point)]) -> CheckResult {
    // `!(err <= tol)` also fails on NaN.
    if err <= tol {
        Ok(())
    } else {
        Err(fail(m, what, err, tol, inputs))
    }
}

/// Projection lands on the manifold and is idempotent, for an ambient point `a` where it is defined.
///
/// Checks that `project(a)` succeeds, that `distance_to_manifold(project(a)) <= tol`, that
/// `check_point(project(a), tol)` passes, and that `project(project(a)) = project(a)` within `tol`.
pub fn check_project<M: Manifold>(m: &M, a: &M::Point, tol: f64) -> CheckResult {
    let p = m.project(a).map_err(|e| format!("{}: project failed on a = {a:?}: {e}", m.name()))?;
    let d = m
        .distance_to_manifold(&p)
        .map_err(|e| format!("{}: distance_to_manifold failed on p = project(a) = {p:?}: {e}", m.name()))?;
    ensure(m, "project(a) is on the manifold", d, tol, &[("a", a), ("project(a)", &p)])?;
    m.check_point("p", &p, tol).map_err(|e| format!("{}: check_point rejects project(a) = {p:?}: {e}", m.name()))?;
    let pp = m.project(&p).map_err(|e| format!("{}: project failed on project(a) = {p:?}: {e}", m.name()))?;
    ensure(m, "project(project(a)) = project(a)", flat_distance(m, &pp, &p), tol, &[("a", a), ("project(a)", &p)])
}

/// `project(a)` is at least as close to `a` (ambient Euclidean distance) as the manifold point `x`:
/// `|a - project(a)| <= |a - x| + tol`.
pub fn check_project_closest<M: Manifold>(m: &M, a: &M::Point, x: &M::Point, tol: f64) -> CheckResult {
    let p = m.project(a).map_err(|e| format!("{}: project failed on a = {a:?}: {e}", m.name()))?;
    let excess = flat_distance(m, a, &p) - flat_distance(m, a, x);
    ensure(
        m,
        "|a - project(a)| <= |a - x| for x on the manifold",
        excess,
        tol,
        &[("a", a), ("project(a)", &p), ("x", x)],
    )
}

/// `distance_to_manifold(a)` equals the ambient Euclidean distance `|a - project(a)|`, within `tol`.
pub fn check_distance_to_manifold<M: Manifold>(m: &M, a: &M::Point, tol: f64) -> CheckResult {
    let p = m.project(a).map_err(|e| format!("{}: project failed on a = {a:?}: {e}", m.name()))?;
    let d = m
        .distance_to_manifold(a)
        .map_err(|e| format!("{}: distance_to_manifold failed on a = {a:?}: {e}", m.name()))?;
    let err = (d - flat_distance(m, a, &p)).abs();
    ensure(m, "distance_to_manifold(a) = |a - project(a)|", err, tol, &[("a", a), ("project(a)", &p)])
}

/// Tangent projection at a manifold point `x` is idempotent and orthogonal, for ambient vectors `v`, `w`.
///
/// Checks `P(P v) = P v` within `tol * (1 + |v|)` and `<v - P v, P w> = 0` (flat ambient inner product)
/// within `tol * (1 + |v| |w|)`. Every ambient metric used in this crate is a constant multiple of the flat
/// one, so orthogonality does not depend on the normalisation.
pub fn check_tangent_project<M: Manifold>(m: &M, x: &M::Point, v: &M::Point, w: &M::Point, tol: f64) -> CheckResult {
    let pv = m.tangent_project(x, v);
    let ppv = m.tangent_project(x, &pv);
    let nv = flat_dot(m, v, v).sqrt();
    let nw = flat_dot(m, w, w).sqrt();
    ensure(m, "tangent_project idempotent", flat_distance(m, &ppv, &pv), tol * (1.0 + nv), &[("x", x), ("v", v)])?;
    let pw = m.tangent_project(x, w);
    let normal = flat_combine(m, v, &pv, |a, b| a - b);
    let dot = flat_dot(m, &normal, &pw).abs();
    ensure(m, "<v - P v, P w> = 0", dot, tol * (1.0 + nv * nw), &[("x", x), ("v", v), ("w", w)])
}

/// `exp(x, log(x, y)) = y` within `tol`, for manifold points with `dist(x, y) < injectivity_radius - margin`
/// (other pairs pass trivially).
pub fn check_exp_log<M: Manifold>(m: &M, x: &M::Point, y: &M::Point, margin: f64, tol: f64) -> CheckResult {
    let d = m.dist(x, y);
    if d >= m.injectivity_radius() - margin {
        return Ok(());
    }
    let l = m.log(x, y);
    let back = m.exp(x, &l);
    ensure(m, "exp(x, log(x, y)) = y", flat_distance(m, &back, y), tol, &[("x", x), ("y", y), ("log(x, y)", &l)])
}

/// `log(x, exp(x, v)) = v` within `tol`, for a tangent vector `v` at `x` with
/// `|v| < injectivity_radius - margin` (other vectors pass trivially).
pub fn check_log_exp<M: Manifold>(m: &M, x: &M::Point, v: &M::Point, margin: f64, tol: f64) -> CheckResult {
    if norm_at(m, x, v) >= m.injectivity_radius() - margin {
        return Ok(());
    }
    let y = m.exp(x, v);
    let back = m.log(x, &y);
    ensure(m, "log(x, exp(x, v)) = v", flat_distance(m, &back, v), tol, &[("x", x), ("v", v), ("exp(x, v)", &y)])
}

/// `dist(x, exp(x, v)) = |v|` within `tol`, for a tangent vector `v` at `x` with
/// `|v| < injectivity_radius - margin` (other vectors pass trivially).
pub fn check_dist_exp<M: Manifold>(m: &M, x: &M::Point, v: &M::Point, margin: f64, tol: f64) -> CheckResult {
    let n = norm_at(m, x, v);
    if n >= m.injectivity_radius() - margin {
        return Ok(());
    }
    let y = m.exp(x, v);
    let err = (m.dist(x, &y) - n).abs();
    ensure(m, "dist(x, exp(x, v)) = |v|", err, tol, &[("x", x), ("v", v), ("exp(x, v)", &y)])
}

/// `log(x, y)` is a minimising geodesic to `y`, for any manifold points, including the cut locus.
///
/// Checks that `log(x, y)` is tangent (`P log = log` within `tol`) and, when `dim > 0` (connected
/// manifolds), that `|log(x, y)| = dist(x, y)` and `exp(x, log(x, y)) = y`, both within `tol`. For a
/// 0-dimensional manifold tangency alone forces `log = 0`.
pub fn check_log<M: Manifold>(m: &M, x: &M::Point, y: &M::Point, tol: f64) -> CheckResult {
    let l = m.log(x, y);
    let pl = m.tangent_project(x, &l);
    let inputs = [("x", x), ("y", y), ("log(x, y)", &l)];
    ensure(m, "log(x, y) is tangent at x", flat_distance(m, &pl, &l), tol, &inputs)?;
    if m.dim() == 0 {
        return Ok(());
    }
    let d = m.dist(x, y);
    ensure(m, "|log(x, y)| = dist(x, y)", (norm_at(m, x, &l) - d).abs(), tol, &inputs)?;
    let back = m.exp(x, &l);
    ensure(m, "exp(x, log(x, y)) = y", flat_distance(m, &back, y), tol, &inputs)
}

/// Distance axioms on manifold points: `dist(x, x) = 0` (within `tol`), `dist(x, y) >= 0`,
/// `dist(x, y) = dist(y, x)` (within `tol`) and `dist(x, z) <= dist(x, y) + dist(y, z) + tol`;
/// every value finite.
pub fn check_dist_metric<M: Manifold>(m: &M, x: &M::Point, y: &M::Point, z: &M::Point, tol: f64) -> CheckResult {
    let (dxy, dyx, dyz, dxz) = (m.dist(x, y), m.dist(y, x), m.dist(y, z), m.dist(x, z));
    let inputs = [("x", x), ("y", y), ("z", z)];
    for (name, d) in [("dist(x, y)", dxy), ("dist(y, z)", dyz), ("dist(x, z)", dxz)] {
        if !d.is_finite() || d < 0.0 {
            return Err(fail(m, &format!("{name} = {d} is a finite non-negative number"), d, 0.0, &inputs));
        }
    }
    ensure(m, "dist(x, x) = 0", m.dist(x, x).abs(), tol, &inputs)?;
    ensure(m, "dist(x, y) = dist(y, x)", (dxy - dyx).abs(), tol, &inputs)?;
    ensure(m, "dist(x, z) <= dist(x, y) + dist(y, z)", dxz - dxy - dyz, tol, &inputs)
}

/// `exp(x, v)` lies on the manifold (`distance_to_manifold <= tol`) for any tangent vector `v`, and
/// `exp(x, 0) = x` within `tol`.
pub fn check_exp_on_manifold<M: Manifold>(m: &M, x: &M::Point, v: &M::Point, tol: f64) -> CheckResult {
    let y = m.exp(x, v);
    let d = m
        .distance_to_manifold(&y)
        .map_err(|e| format!("{}: distance_to_manifold failed on exp(x, v) = {y:?}: {e}", m.name()))?;
    ensure(m, "exp(x, v) is on the manifold", d, tol, &[("x", x), ("v", v), ("exp(x, v)", &y)])?;
    let zero = flat_combine(m, v, v, |_, _| 0.0);
    let y0 = m.exp(x, &zero);
    ensure(m, "exp(x, 0) = x", flat_distance(m, &y0, x), tol, &[("x", x), ("exp(x, 0)", &y0)])
}

// ---------------------------------------------------------------------------------------------------
// Batched against per-point.

/// A batch tensor `[B, ..ambient]` of the given dtype and device from per-point values (flat row-major
/// coordinates, see [`Manifold::to_flat`]). `points` must not be empty.
pub fn to_batch<M: Manifold + TensorManifold>(m: &M, points: &[M::Point], kind: Kind, device: Device) -> Tensor {
    assert!(!points.is_empty(), "to_batch: empty batch");
    let flat: Vec<f64> = points.iter().flat_map(|p| m.to_flat(p)).collect();
    let mut shape = vec![points.len() as i64];
    shape.extend(m.point_shape());
    Tensor::from_slice(&flat).reshape(shape.as_slice()).to_kind(kind).to_device(device)
}

/// The rows of a batch tensor `[B, ..]` (any dtype, any device) as flat f64 vectors.
pub fn batch_rows(t: &Tensor) -> Vec<Vec<f64>> {
    let b = t.size()[0];
    let flat = t.detach().to_device(Device::Cpu).to_kind(Kind::Double).reshape([b, -1]);
    (0..b).map(|i| Vec::<f64>::try_from(flat.get(i)).expect("batch_rows: tensor to Vec<f64>")).collect()
}

fn compare_rows<M: Manifold>(
    m: &M,
    op: &str,
    got: &Tensor,
    expected: &[Vec<f64>],
    inputs: &[(&str, &[M::Point])],
    tol: f64,
) -> CheckResult {
    let b = expected.len() as i64;
    if got.size().first() != Some(&b) {
        return Err(format!("{}: {op}: batched output has shape {:?}, expected batch size {b}", m.name(), got.size()));
    }
    for (i, (g, e)) in batch_rows(got).iter().zip(expected).enumerate() {
        if g.len() != e.len() {
            return Err(format!(
                "{}: {op}: row {i} has {} entries, per-point value has {}",
                m.name(),
                g.len(),
                e.len()
            ));
        }
        let scale = 1.0 + e.iter().map(|c| c * c).sum::<f64>().sqrt();
        let err = g.iter().zip(e).map(|(p, q)| (p - q).powi(2)).sum::<f64>().sqrt();
        if err.is_nan() || err > tol * scale {
            let mut msg = format!(
                "{}: {op}: batched row {i} differs from the per-point value by {err:.3e} > {tol:.1e} * (1 + |value|)\
                 \n  batched   = {g:?}\n  per-point = {e:?}",
                m.name()
            );
            for (name, pts) in inputs {
                msg.push_str(&format!("\n  {name}[{i}] = {:?}", m.to_flat(&pts[i])));
            }
            return Err(msg);
        }
    }
    Ok(())
}

/// `project_t` agrees with `project` row by row (Double, CPU), within `tol * (1 + |value|)`.
///
/// Every row of `a` must have a defined projection.
pub fn check_conform_project<M: Manifold + TensorManifold>(m: &M, a: &[M::Point], tol: f64) -> CheckResult {
    let mut expected = Vec::with_capacity(a.len());
    for p in a {
        let q = m.project(p).map_err(|e| format!("{}: project failed on {p:?}: {e}", m.name()))?;
        expected.push(m.to_flat(&q));
    }
    let got = m.project_t(&to_batch(m, a, Kind::Double, Device::Cpu));
    compare_rows(m, "project_t vs project", &got, &expected, &[("a", a)], tol)
}

/// `tangent_project_t` agrees with `tangent_project` row by row (Double, CPU), within
/// `tol * (1 + |value|)`; `x` on the manifold, `v` any ambient vectors.
pub fn check_conform_tangent_project<M: Manifold + TensorManifold>(
    m: &M,
    x: &[M::Point],
    v: &[M::Point],
    tol: f64,
) -> CheckResult {
    let expected: Vec<_> = x.iter().zip(v).map(|(x, v)| m.to_flat(&m.tangent_project(x, v))).collect();
    let (xt, vt) = (to_batch(m, x, Kind::Double, Device::Cpu), to_batch(m, v, Kind::Double, Device::Cpu));
    let got = m.tangent_project_t(&xt, &vt);
    compare_rows(m, "tangent_project_t vs tangent_project", &got, &expected, &[("x", x), ("v", v)], tol)
}

/// `exp_t` agrees with `exp` row by row (Double, CPU), within `tol * (1 + |value|)`; `v` tangent at `x`.
pub fn check_conform_exp<M: Manifold + TensorManifold>(m: &M, x: &[M::Point], v: &[M::Point], tol: f64) -> CheckResult {
    let expected: Vec<_> = x.iter().zip(v).map(|(x, v)| m.to_flat(&m.exp(x, v))).collect();
    let (xt, vt) = (to_batch(m, x, Kind::Double, Device::Cpu), to_batch(m, v, Kind::Double, Device::Cpu));
    let got = m.exp_t(&xt, &vt);
    compare_rows(m, "exp_t vs exp", &got, &expected, &[("x", x), ("v", v)], tol)
}

/// `log_t` agrees with `log` row by row (Double, CPU), within `tol * (1 + |value|)`.
///
/// Keep the pairs away from the cut locus, where both faces may legitimately pick different geodesics.
pub fn check_conform_log<M: Manifold + TensorManifold>(m: &M, x: &[M::Point], y: &[M::Point], tol: f64) -> CheckResult {
    let expected: Vec<_> = x.iter().zip(y).map(|(x, y)| m.to_flat(&m.log(x, y))).collect();
    let (xt, yt) = (to_batch(m, x, Kind::Double, Device::Cpu), to_batch(m, y, Kind::Double, Device::Cpu));
    let got = m.log_t(&xt, &yt);
    compare_rows(m, "log_t vs log", &got, &expected, &[("x", x), ("y", y)], tol)
}

/// `dist_t` (shape `[B]`) agrees with `dist` row by row (Double, CPU), within `tol * (1 + dist)`.
pub fn check_conform_dist<M: Manifold + TensorManifold>(
    m: &M,
    x: &[M::Point],
    y: &[M::Point],
    tol: f64,
) -> CheckResult {
    let expected: Vec<_> = x.iter().zip(y).map(|(x, y)| vec![m.dist(x, y)]).collect();
    let (xt, yt) = (to_batch(m, x, Kind::Double, Device::Cpu), to_batch(m, y, Kind::Double, Device::Cpu));
    let got = m.dist_t(&xt, &yt);
    if got.size() != [x.len() as i64] {
        return Err(format!("{}: dist_t returned shape {:?}, expected [{}]", m.name(), got.size(), x.len()));
    }
    compare_rows(m, "dist_t vs dist", &got, &expected, &[("x", x), ("y", y)], tol)
}

/// `distance_to_manifold_t` (shape `[B]`) agrees with `distance_to_manifold` row by row (Double, CPU),
/// within `tol * (1 + distance)`.
pub fn check_conform_distance_to_manifold<M: Manifold + TensorManifold>(
    m: &M,
    a: &[M::Point],
    tol: f64,
) -> CheckResult {
    let mut expected = Vec::with_capacity(a.len());
    for p in a {
        let d = m
            .distance_to_manifold(p)
            .map_err(|e| format!("{}: distance_to_manifold failed on {p:?}: {e}", m.name()))?;
        expected.push(vec![d]);
    }
    let got = m.distance_to_manifold_t(&to_batch(m, a, Kind::Double, Device::Cpu));
    if got.size() != [a.len() as i64] {
        return Err(format!(
            "{}: distance_to_manifold_t returned shape {:?}, expected [{}]",
            m.name(),
            got.size(),
            a.len()
        ));
    }
    compare_rows(m, "distance_to_manifold_t vs distance_to_manifold", &got, &expected, &[("a", a)], tol)
}

/// Inputs for the batched checks: equal-length slices of per-point values.
#[derive(Debug, Clone)]
pub struct BatchInputs<P> {
    /// Manifold points.
    pub x: Vec<P>,
    /// Manifold points paired with `x`, away from its cut locus.
    pub y: Vec<P>,
    /// Tangent vectors at `x`.
    pub v: Vec<P>,
    /// Ambient points where projection is defined.
    pub a: Vec<P>,
    /// Ambient vectors (not necessarily tangent).
    pub w: Vec<P>,
}

/// Every batched operation agrees with its per-point twin row by row in `Kind::Double` on the CPU:
/// `project`, `tangent_project`, `exp`, `log`, `dist` and `distance_to_manifold`, each within
/// `tol * (1 + |value|)`.
pub fn check_conformance<M: Manifold + TensorManifold>(m: &M, b: &BatchInputs<M::Point>, tol: f64) -> CheckResult {
    check_conform_project(m, &b.a, tol)?;
    check_conform_tangent_project(m, &b.x, &b.w, tol)?;
    check_conform_exp(m, &b.x, &b.v, tol)?;
    check_conform_log(m, &b.x, &b.y, tol)?;
    check_conform_dist(m, &b.x, &b.y, tol)?;
    check_conform_distance_to_manifold(m, &b.a, tol)
}

/// Every batched operation returns a tensor of the dtype `kind` on `device` when its inputs are of that
/// dtype on that device, with the documented shape (`[B, ..ambient]` or `[B]`) and finite values.
pub fn check_kind_device<M: Manifold + TensorManifold>(
    m: &M,
    b: &BatchInputs<M::Point>,
    kind: Kind,
    device: Device,
) -> CheckResult {
    let t = |p: &[M::Point]| to_batch(m, p, kind, device);
    let (x, y, v, a, w) = (t(&b.x), t(&b.y), t(&b.v), t(&b.a), t(&b.w));
    let n = b.x.len() as i64;
    let mut point = vec![n];
    point.extend(m.point_shape());
    let outputs = [
        ("project_t", m.project_t(&a), point.clone()),
        ("tangent_project_t", m.tangent_project_t(&x, &w), point.clone()),
        ("exp_t", m.exp_t(&x, &v), point.clone()),
        ("log_t", m.log_t(&x, &y), point.clone()),
        ("dist_t", m.dist_t(&x, &y), vec![n]),
        ("distance_to_manifold_t", m.distance_to_manifold_t(&a), vec![n]),
    ];
    for (op, out, shape) in outputs {
        if out.kind() != kind || out.device() != device || out.size() != shape {
            return Err(format!(
                "{}: {op} on {kind:?} inputs on {device:?} returned {:?} on {:?} of shape {:?}, expected shape {shape:?}",
                m.name(),
                out.kind(),
                out.device(),
                out.size()
            ));
        }
        if out.isfinite().all().int64_value(&[]) == 0 {
            return Err(format!(
                "{}: {op} on {kind:?} inputs returned non-finite values: {:?}",
                m.name(),
                batch_rows(&out)
            ));
        }
    }
    Ok(())
}

/// Gradients of a batched operation are finite: builds each input batch in `Kind::Double` on the CPU
/// with `requires_grad`, applies `op`, back-propagates a fixed non-uniform weighting of its output and
/// checks that the output and every input gradient are finite (a missing gradient counts as zero).
///
/// `name` names the operation in the message; `inputs` are equal-length batches of per-point values.
pub fn check_grad_finite<M, F>(m: &M, name: &str, inputs: &[&[M::Point]], op: F) -> CheckResult
where
    M: Manifold + TensorManifold,
    F: Fn(&[Tensor]) -> Tensor,
{
    let leaves: Vec<Tensor> =
        inputs.iter().map(|p| to_batch(m, p, Kind::Double, Device::Cpu).set_requires_grad(true)).collect();
    let out = op(&leaves);
    let describe = |inputs: &[&[M::Point]]| {
        inputs
            .iter()
            .enumerate()
            .map(|(k, p)| format!("\n  input {k} = {:?}", p.iter().map(|q| m.to_flat(q)).collect::<Vec<_>>()))
            .collect::<String>()
    };
    if out.isfinite().all().int64_value(&[]) == 0 {
        return Err(format!("{}: {name}: non-finite output {:?}{}", m.name(), batch_rows(&out), describe(inputs)));
    }
    let weights = (Tensor::arange(out.numel() as i64, (Kind::Double, Device::Cpu)) * 0.7 + 0.3)
        .sin()
        .reshape(out.size().as_slice());
    (&out * weights).sum(Kind::Double).backward();
    for (k, leaf) in leaves.iter().enumerate() {
        let g = leaf.grad();
        if g.defined() && g.isfinite().all().int64_value(&[]) == 0 {
            return Err(format!(
                "{}: {name}: non-finite gradient with respect to input {k}: {:?}{}",
                m.name(),
                batch_rows(&g),
                describe(inputs)
            ));
        }
    }
    Ok(())
}
