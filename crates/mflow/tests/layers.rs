//! Flow building blocks: inverse(forward(z)) = z (f32 and f64, tails included), log|det| against the
//! autograd Jacobian, forward-mode Jacobians against autograd, spline monotonicity (proptest).

use mflow::dual::Dual;
use mflow::model::build_flow;
use mflow::spline::{rq_spline, rq_spline_inverse};
use mflow::{ActNorm, FlowConfig, LuLinear, Mixing, Permutation, RqCoupling, SplineConfig, Transform};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Device, Kind, Tensor};

/// Adds N(0, std^2) noise to every variable, so that no layer sits at its identity initialisation.
fn perturb(vs: &nn::VarStore, std: f64, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tch::no_grad(|| {
        for mut v in vs.trainable_variables() {
            let noise = mflow::nets::normal(&mut rng, &v.size()).to_kind(v.kind()) * std;
            let _ = v.g_add_(&noise);
        }
    });
}

/// Points spread over [-6, 6]^dim: inside the spline's interval [-3, 3] and on both tails.
fn points(dim: i64, n: i64, kind: Kind) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (mflow::nets::uniform(&mut rng, &[n, dim], 6.0)).to_kind(kind)
}

fn vs(kind: Kind) -> nn::VarStore {
    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(kind);
    vs
}

/// Every layer kind and a whole flow on R^dim, perturbed.
fn layers(vs: &nn::VarStore, dim: i64) -> Vec<Box<dyn Transform>> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let root = vs.root();
    let spline = SplineConfig { bins: 8, tail_bound: 3.0, ..SplineConfig::default() };
    let flow_cfg = FlowConfig { layers: 3, hidden: 16, blocks: 1, spline, mixing: Mixing::Lu, actnorm: true };
    let perm_cfg = FlowConfig { mixing: Mixing::Permutation, actnorm: false, ..flow_cfg };
    vec![
        Box::new(RqCoupling::new(&(&root / "c0"), dim, 0, 16, 2, spline, &mut rng)),
        Box::new(RqCoupling::new(&(&root / "c1"), dim, 1, 16, 2, spline, &mut rng)),
        Box::new(LuLinear::new(&(&root / "lu"), dim)),
        Box::new(Permutation::random(&(&root / "perm"), dim, &mut rng)),
        Box::new(ActNorm::new(&(&root / "an"), dim)),
        Box::new(build_flow(&(&root / "flow"), dim, &flow_cfg, &mut rng)),
        Box::new(build_flow(&(&root / "pflow"), dim, &perm_cfg, &mut rng)),
    ]
}

/// One libtorch thread: these tensors are small, and OpenMP barriers on a shared machine cost more than
/// the second core gains.
fn setup() {
    tch::set_num_threads(1);
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().to_kind(Kind::Double).double_value(&[])
}

fn round_trip(kind: Kind, tol: f64, ld_tol: f64) {
    for dim in [1, 2, 3] {
        let store = vs(kind);
        let ls = layers(&store, dim);
        perturb(&store, 0.15, dim as u64);
        let z = points(dim, 512, kind);
        for (i, l) in ls.iter().enumerate() {
            let (x, ld_f) = l.forward(&z);
            let (z2, ld_i) = l.inverse(&x);
            // Relative to the largest coordinate met on the way (at least 1): a flow that stretches
            // [-6, 6] to [-10, 10] loses the last bit or two of the larger numbers.
            let scale = max_abs(&x).max(max_abs(&z)).max(1.0);
            let err = max_abs(&(&z2 - &z)) / scale;
            assert!(err < tol, "layer {i} on R^{dim}: |inverse(forward(z)) - z| / {scale:.1} = {err:e}");
            let (z3, _) = l.inverse(&z);
            let err = max_abs(&(l.forward(&z3).0 - &z)) / scale;
            assert!(err < tol, "layer {i} on R^{dim}: |forward(inverse(x)) - x| / {scale:.1} = {err:e}");
            let err = max_abs(&(&ld_f + &ld_i));
            assert!(err < ld_tol, "layer {i} on R^{dim}: forward and inverse log-dets differ by {err:e}");
        }
    }
}

#[test]
fn inverse_of_forward_is_identity_f64() {
    setup();
    round_trip(Kind::Double, 1e-10, 1e-9);
}

#[test]
fn inverse_of_forward_is_identity_f32() {
    setup();
    round_trip(Kind::Float, 1e-5, 1e-3);
}

/// The full Jacobian by reverse-mode autograd, one backward pass per output coordinate.
fn autograd_jacobian(l: &dyn Transform, z: &Tensor) -> Tensor {
    let z = z.detach().set_requires_grad(true);
    let (x, _) = l.forward(&z);
    let rows: Vec<Tensor> = (0..l.dim())
        .map(|i| Tensor::run_backward(&[&x.select(1, i).sum(x.kind())], &[&z], true, false).remove(0))
        .collect();
    Tensor::stack(&rows, 1)
}

#[test]
fn log_det_and_forward_mode_jacobian_match_autograd() {
    setup();
    for dim in [1, 2, 3] {
        let store = vs(Kind::Double);
        let ls = layers(&store, dim);
        perturb(&store, 0.15, 10 + dim as u64);
        let z = points(dim, 64, Kind::Double);
        for (i, l) in ls.iter().enumerate() {
            let jac = autograd_jacobian(l.as_ref(), &z);
            let (_, logabs) = Tensor::linalg_slogdet(&jac);
            let (_, ld) = l.forward(&z);
            let err = max_abs(&(&ld - &logabs));
            assert!(err < 1e-9, "layer {i} on R^{dim}: log|det| differs from autograd by {err:e}");
            let err = max_abs(&(l.jacobian(&z) - &jac));
            assert!(err < 1e-9, "layer {i} on R^{dim}: forward-mode Jacobian differs from autograd by {err:e}");
            // The log-det of forward_jvp is the forward log-det.
            let t = Tensor::ones([1, 64, dim], (Kind::Double, Device::Cpu));
            let (_, ld2, _) = l.forward_jvp(&z, &t);
            assert!(max_abs(&(&ld2 - &ld)) < 1e-12);
        }
    }
}

fn spline_params(raw: &[f64], bins: i64) -> Tensor {
    Tensor::from_slice(raw).reshape([1, 1, 3 * bins - 1]).expand([200, 1, 3 * bins - 1], false)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// For any parameters, the spline is strictly increasing on a grid across [-5, 5] (tails included),
    /// continuous at ±B, has positive derivative, and inverts to 1e-10 (weighed by the local slope when it
    /// is below 1).
    #[test]
    fn spline_is_monotone(raw in proptest::collection::vec(-4.0f64..4.0, 23), bound in 0.5f64..4.0) {
        setup();
        let c = SplineConfig { bins: 8, tail_bound: bound, ..SplineConfig::default() };
        let params = spline_params(&raw, 8);
        let x = Tensor::linspace(-5.0, 5.0, 200, (Kind::Double, Device::Cpu)).reshape([200, 1]);
        let (y, ld) = rq_spline(&Dual::constant(x.shallow_clone()), &Dual::constant(params.shallow_clone()), &c);
        let y = y.v.squeeze_dim(1);
        let diffs = y.narrow(0, 1, 199) - y.narrow(0, 0, 199);
        prop_assert!(diffs.min().double_value(&[]) > 0.0, "not increasing");
        prop_assert!(ld.isfinite().all().int64_value(&[]) == 1);
        let edges = Tensor::from_slice(&[-bound - 1e-9, -bound + 1e-9, bound - 1e-9, bound + 1e-9]).reshape([4, 1]);
        let (ye, _) = rq_spline(&Dual::constant(edges.shallow_clone()), &Dual::constant(params.narrow(0, 0, 4)), &c);
        prop_assert!(max_abs(&(ye.v - &edges)) < 1e-6, "jump at the tails");
        let (x2, ld2) = rq_spline_inverse(&y.reshape([200, 1]), &params, &c);
        // Round-off in y becomes round-off / slope in x: the error is weighed by min(1, local slope), so
        // that extreme parameters (slopes down to 1e-6) are held to the accuracy their conditioning allows.
        let weighted = (&x2 - &x).abs() * ld.exp().clamp_max(1.0).reshape([200, 1]);
        prop_assert!(max_abs(&weighted) < 1e-10, "inverse error {:e}", max_abs(&weighted));
        prop_assert!(max_abs(&(ld2 + ld)) < 1e-8);
    }
}
