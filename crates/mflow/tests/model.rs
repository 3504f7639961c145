//! Models: the decoder Jacobian against autograd and finite differences, densities that integrate to 1,
//! encode/decode consistency, bad input refused with messages that name the problem, checkpoints.

use mflow::{Dataset, ManifoldFlow, MflowError, Mixing, ModelConfig, ModelKind, Precision, Schedule, TrainConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// One libtorch thread: these tensors are small, and OpenMP barriers on a shared machine cost more than
/// the second core gains.
fn setup() {
    tch::set_num_threads(1);
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().to_kind(Kind::Double).double_value(&[])
}

fn small(kind: ModelKind, d: i64, n: i64) -> ModelConfig {
    let mut c = ModelConfig::new(kind, d, n);
    c.outer.layers = 3;
    c.outer.hidden = 16;
    c.inner.hidden = 8;
    c.encoder.hidden = 16;
    c.precision = Precision::F64;
    c
}

/// A model with every weight perturbed away from its identity initialisation (through a checkpoint).
fn perturbed(config: &ModelConfig, std: f64) -> ManifoldFlow {
    let mut m = ManifoldFlow::new(config, 1, Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let tensors: Vec<(String, Tensor)> = m
        .checkpoint()
        .into_iter()
        .map(|(n, t)| {
            if n.starts_with("__") || n.ends_with("perm") {
                (n, t)
            } else {
                let noise = mflow::nets::normal(&mut rng, &t.size()).to_kind(t.kind()) * std;
                (n, t + noise)
            }
        })
        .collect();
    m.load_checkpoint(&tensors).unwrap();
    m
}

#[test]
fn decoder_jacobian_matches_autograd() {
    setup();
    for (kind, d, n) in [(ModelKind::MFlow, 3, 2), (ModelKind::MeFlow, 3, 1), (ModelKind::Pie, 2, 1)] {
        for mixing in [Mixing::Lu, Mixing::Permutation] {
            let mut c = small(kind, d, n);
            c.outer.mixing = mixing;
            c.outer.actnorm = true;
            let m = perturbed(&c, 0.2);
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let v = mflow::nets::uniform(&mut rng, &[50, n], 4.0);
            let fwd = m.decoder_jacobian(&v);
            let rev = m.decoder_jacobian_autograd(&v);
            assert_eq!(fwd.size(), [50, d, n]);
            let err = max_abs(&(&fwd - &rev));
            assert!(err < 1e-10, "{kind:?} {mixing:?}: forward-mode J differs from autograd by {err:e}");
        }
    }
}

#[test]
fn circle_density_integrates_to_one_with_finite_difference_length() {
    setup();
    let m = perturbed(&small(ModelKind::MFlow, 2, 1), 0.2);
    // Manifold coordinates on a fine grid; the learnt curve g(v) and its length element by central
    // differences, independent of the forward-mode Jacobian.
    let h = 4e-3;
    let v = Tensor::arange_start_step(-10.0, 10.0, h, (Kind::Double, Device::Cpu)).reshape([-1, 1]);
    let x = m.decode(&v);
    let length = (m.decode(&(&v + h)) - m.decode(&(&v - h))).square().sum_dim_intlist(-1, false, Kind::Double).sqrt()
        / (2.0 * h);
    let log_p = m.manifold_log_prob(&x).unwrap();
    let mass = (log_p.exp() * &length).sum(Kind::Double).double_value(&[]) * h;
    assert!((mass - 1.0).abs() < 1e-3, "mass on the learnt circle = {mass}");
    // Points on the learnt manifold project to themselves and encode back to their coordinates.
    assert!(max_abs(&(m.project(&x).unwrap() - &x)) < 1e-9);
    assert!(max_abs(&(m.encode(&x).unwrap() - &v)) < 1e-9);
}

#[test]
fn ambient_densities_integrate_to_one() {
    setup();
    // AF on R^2 and PIE with a wide epsilon, on a 2-d grid.
    let mut pie = small(ModelKind::Pie, 2, 1);
    pie.pie_epsilon = 0.5;
    for c in [small(ModelKind::Af, 2, 1), pie] {
        let m = perturbed(&c, 0.2);
        let h = 0.04;
        let g = Tensor::arange_start_step(-8.0, 8.0, h, (Kind::Double, Device::Cpu));
        let n = g.size()[0];
        let x = Tensor::stack(&[g.unsqueeze(1).expand([n, n], false), g.unsqueeze(0).expand([n, n], false)], 2)
            .reshape([-1, 2]);
        let mass = m.ambient_log_prob(&x).unwrap().exp().sum(Kind::Double).double_value(&[]) * h * h;
        assert!((mass - 1.0).abs() < 2e-3, "{:?}: ambient mass = {mass}", c.kind);
    }
}

#[test]
fn bad_manifold_dimension_is_refused() {
    setup();
    for n in [0, 2, 3, -1] {
        let err = ManifoldFlow::new(&ModelConfig::new(ModelKind::MFlow, 2, n), 0, Device::Cpu).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("manifold_dim") && msg.contains("ambient_dim = 2"), "{msg}");
    }
    let mut c = ModelConfig::new(ModelKind::MFlow, 3, 2);
    c.outer.spline.bins = 1;
    assert!(ManifoldFlow::new(&c, 0, Device::Cpu).unwrap_err().to_string().starts_with("outer.spline.bins = 1"));
}

#[test]
fn non_finite_data_is_refused_naming_the_row() {
    setup();
    let m = ManifoldFlow::new(&small(ModelKind::MFlow, 2, 1), 0, Device::Cpu).unwrap();
    let data = Dataset::Circle.sample(10, 0);
    let _ = data.get(7).get(1).fill_(f64::NAN);
    let msg = m.project(&data).unwrap_err().to_string();
    assert_eq!(msg, "invalid data `x`: row 7 has a non-finite value (NaN) in column 1");
    let mut m = m;
    let cfg = TrainConfig { patience: None, ..TrainConfig::default() };
    let msg = mflow::train(&mut m, &data, &cfg, &mut ()).unwrap_err().to_string();
    assert!(msg.contains("`data`") && msg.contains("row 7"), "{msg}");
    let wrong = Tensor::zeros([4, 3], (Kind::Double, Device::Cpu));
    assert!(m.project(&wrong).unwrap_err().to_string().contains("expected shape [rows, 2]"));
}

#[test]
fn unsupported_operations_and_schedules_are_refused() {
    setup();
    let mut af = ManifoldFlow::new(&small(ModelKind::Af, 2, 1), 0, Device::Cpu).unwrap();
    let x = Dataset::Circle.sample(8, 0);
    assert!(matches!(af.manifold_log_prob(&x), Err(MflowError::Unsupported { .. })));
    let cfg = TrainConfig {
        schedule: Schedule::Sequential { manifold_steps: 1, density_steps: 1 },
        ..TrainConfig::default()
    };
    let msg = mflow::train(&mut af, &x, &cfg, &mut ()).unwrap_err().to_string();
    assert!(msg.starts_with("schedule = ") && msg.contains("Simultaneous for the af model"), "{msg}");
    let mf = ManifoldFlow::new(&small(ModelKind::MFlow, 2, 1), 0, Device::Cpu).unwrap();
    assert!(mf.ambient_log_prob(&x).unwrap_err().to_string().contains("not defined for the mflow model"));
}

#[test]
fn checkpoints_round_trip_and_refuse_other_architectures() {
    setup();
    let c = small(ModelKind::MFlow, 3, 2);
    let m = perturbed(&c, 0.1);
    let dir = std::env::temp_dir().join(format!("mflow-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    Tensor::write_safetensors(&m.checkpoint(), &path).unwrap();
    let loaded = Tensor::read_safetensors(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let mut fresh = ManifoldFlow::new(&c, 99, Device::Cpu).unwrap();
    fresh.load_checkpoint(&loaded).unwrap();
    let x = Dataset::SphericalGaussian.sample(20, 3);
    assert!(max_abs(&(fresh.log_prob(&x).unwrap() - m.log_prob(&x).unwrap())) < 1e-12);

    let mut other = c;
    other.outer.spline.bins = 10;
    let err = ManifoldFlow::new(&other, 0, Device::Cpu).unwrap().load_checkpoint(&loaded).unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint does not match this model: architecture field `outer.spline.bins` is 8 in the checkpoint but 10 in this model"
    );
    let err = ManifoldFlow::new(&small(ModelKind::MeFlow, 3, 2), 0, Device::Cpu)
        .unwrap()
        .load_checkpoint(&loaded)
        .unwrap_err();
    assert!(err.to_string().contains("field `kind` is mflow in the checkpoint but meflow"), "{err}");
    let headless: Vec<(String, Tensor)> =
        loaded.iter().filter(|(n, _)| n != mflow::HEADER_NAME).map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    let err = fresh.load_checkpoint(&headless).unwrap_err();
    assert!(err.to_string().contains("not an mflow checkpoint"));
}

#[test]
fn same_seed_same_model_and_samples() {
    setup();
    let c = small(ModelKind::MeFlow, 3, 2);
    let a = ManifoldFlow::new(&c, 4, Device::Cpu).unwrap();
    let b = ManifoldFlow::new(&c, 4, Device::Cpu).unwrap();
    let x = Dataset::PolynomialSurface.sample(16, 0);
    assert_eq!(max_abs(&(a.project(&x).unwrap() - b.project(&x).unwrap())), 0.0);
    assert_eq!(max_abs(&(a.sample(32, 9) - b.sample(32, 9))), 0.0);
}

#[test]
fn datasets_have_their_shapes_and_lie_on_their_manifolds() {
    setup();
    for ds in [Dataset::Circle, Dataset::SphericalGaussian, Dataset::PolynomialSurface, Dataset::Lorenz] {
        let x = ds.sample(500, 1);
        assert_eq!(x.size(), [500, ds.ambient_dim()]);
        assert!(x.isfinite().all().int64_value(&[]) == 1);
        assert_eq!(max_abs(&(ds.sample(500, 1) - &x)), 0.0, "{} is not reproducible", ds.name());
        if let Some(dist) = ds.distance_to_manifold(&x) {
            let mean = dist.mean(Kind::Double).double_value(&[]);
            assert!(mean < 0.01, "{}: mean distance {mean}", ds.name());
            let off = &x * 1.2;
            let far = ds.distance_to_manifold(&off).unwrap().mean(Kind::Double).double_value(&[]);
            assert!(far > 0.05, "{}: scaled points at mean distance {far}", ds.name());
        }
    }
    // The circle's angular density integrates to 1.
    let a = Tensor::linspace(-std::f64::consts::PI, std::f64::consts::PI, 20001, (Kind::Double, Device::Cpu));
    let x = Tensor::stack(&[a.cos(), a.sin()], 1);
    let lp = Dataset::Circle.log_density(&x).unwrap();
    let mass = lp.exp().sum(Kind::Double).double_value(&[]) * (2.0 * std::f64::consts::PI / 20000.0);
    assert!((mass - 1.0).abs() < 1e-3, "{mass}");
}
