//! The network: shapes, zero output at initialisation, rebuilding from named tensors, the flat buffer,
//! the residual score, and config validation.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scores::base::sphere::SphereBase;
use scores::{BaseScore, Schedule, Score};
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};
use train::{Activation, FlatParams, MlpConfig, ResidualScore, ScoreMlp, TensorBase};

fn cfg(activation: Activation) -> MlpConfig {
    MlpConfig { width: 8, depth: 2, activation, n_freqs: 3 }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn shapes_and_zero_output_at_initialisation() {
    for act in [Activation::Silu, Activation::Gelu, Activation::Relu, Activation::Tanh] {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ScoreMlp::new(&vs.root(), &cfg(act), &[3, 3], &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        // 9 + 6 inputs -> 8 -> 8 -> 9.
        assert_eq!(net.n_params(), 15 * 8 + 8 + 8 * 8 + 8 + 8 * 9 + 9);
        assert_eq!(vs.variables().len(), 6);
        assert!(vs.variables().contains_key("layers.2.weight"));
        let x = Tensor::randn([5, 3, 3], (Kind::Float, Device::Cpu));
        let a = Tensor::ones([5], (Kind::Float, Device::Cpu));
        let s = Tensor::from_slice(&[0.01f32, 0.1, 1.0, 10.0, 100.0]);
        let out = net.forward(&x, &a, &s);
        assert_eq!(out.size(), [5, 3, 3]);
        assert_eq!(out.kind(), Kind::Float);
        assert_eq!(max_abs(&out), 0.0, "output layer starts at zero");
    }
}

#[test]
fn initialisation_is_seeded() {
    let build = |seed| {
        let vs = nn::VarStore::new(Device::Cpu);
        let net =
            ScoreMlp::new(&vs.root(), &cfg(Activation::Silu), &[2], &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        net.named_parameters()[0].1.detach().copy()
    };
    assert!(build(3).equal(&build(3)));
    assert!(!build(3).equal(&build(4)));
    let w = build(3);
    // Hidden weights uniform on [-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in = 2 + 6.
    assert!(max_abs(&w) <= 1.0 / 8f64.sqrt());
}

#[test]
fn from_tensors_round_trips_and_refuses_mismatches() {
    let vs = nn::VarStore::new(Device::Cpu);
    let c = cfg(Activation::Tanh);
    let net = ScoreMlp::new(&vs.root(), &c, &[2], &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    // Give the output layer non-zero weights so the comparison means something.
    tch::no_grad(|| {
        let _ = net.named_parameters()[4].1.shallow_clone().fill_(0.3);
    });
    let named: Vec<_> = net.named_parameters().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    let copy = ScoreMlp::from_tensors(&c, &[2], &named).unwrap();
    let x = Tensor::randn([4, 2], (Kind::Float, Device::Cpu));
    let (a, s) = (Tensor::ones([4], (Kind::Float, Device::Cpu)), Tensor::full([4], 0.5, (Kind::Float, Device::Cpu)));
    let (y0, y1) = (net.forward(&x, &a, &s), copy.forward(&x, &a, &s));
    assert!(max_abs(&y0) > 0.0 && y0.equal(&y1));

    let e = ScoreMlp::from_tensors(&MlpConfig { width: 9, ..c }, &[2], &named).unwrap_err().to_string();
    assert!(e.contains("layers.0.weight") && e.contains("shape"), "{e}");
    let e = ScoreMlp::from_tensors(&c, &[2], &named[1..]).unwrap_err().to_string();
    assert!(e.contains("layers.0.weight") && e.contains("missing"), "{e}");
    let mut extra: Vec<_> = named.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    extra.push(("layers.9.bias".into(), Tensor::zeros([1], (Kind::Float, Device::Cpu))));
    let e = ScoreMlp::from_tensors(&c, &[2], &extra).unwrap_err().to_string();
    assert!(e.contains("layers.9.bias"), "{e}");
}

#[test]
fn flat_buffer_drives_the_network() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = ScoreMlp::new(&vs.root(), &cfg(Activation::Silu), &[3], &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    let before: Vec<Tensor> = net.named_parameters().iter().map(|(_, t)| t.detach().copy()).collect();
    let mut flat = FlatParams::new(net.named_parameters());
    assert_eq!(flat.len(), net.n_params());
    // Values are unchanged by the re-pointing, and the split views are the parameters.
    for ((name, view), b) in flat.split(flat.buffer()).iter().zip(&before) {
        assert!(view.equal(b), "{name}");
    }
    // An in-place update of the buffer is seen by the network's variables (and the VarStore's).
    tch::no_grad(|| {
        let _ = flat.buffer_mut().g_add_scalar_(1.0);
    });
    for ((_, p), b) in net.named_parameters().iter().zip(&before) {
        assert!(p.detach().equal(&(b + 1.0)));
    }
    let w = vs.variables()["layers.0.weight"].detach();
    assert!(w.equal(&(&before[0] + 1.0)));
    // The flat gradient is the concatenation of the per-parameter gradients.
    let x = Tensor::randn([6, 3], (Kind::Float, Device::Cpu));
    let (a, s) = (Tensor::ones([6], (Kind::Float, Device::Cpu)), Tensor::full([6], 0.3, (Kind::Float, Device::Cpu)));
    let loss = net.forward(&x, &a, &s).square().sum(Kind::Float) + net.named_parameters()[0].1.sum(Kind::Float);
    let params: Vec<Tensor> = net.named_parameters().into_iter().map(|(_, t)| t).collect();
    let reference = Tensor::run_backward(&[&loss], &params, true, false);
    let g = flat.backward(&loss).copy();
    let reference = Tensor::cat(&reference.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
    assert!(g.allclose(&reference, 0.0, 0.0, false));
    assert!(max_abs(&g) > 0.0);
}

#[test]
fn residual_score_adds_the_base_and_divides_by_sigma() {
    let schedule = Schedule::vp(0.1, 20.0).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut vs = vs;
    vs.set_kind(Kind::Double);
    let net = ScoreMlp::new(&vs.root(), &cfg(Activation::Silu), &[3], &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
    tch::no_grad(|| {
        let _ = net.named_parameters()[5].1.shallow_clone().fill_(0.25);
    });
    let x = Tensor::randn([4, 3], (Kind::Double, Device::Cpu));
    let t = Tensor::from_slice(&[0.05f64, 0.3, 0.6, 0.9]);
    let (a, s) = (schedule.alpha_t(&t), schedule.sigma_t(&t));
    let out = net.forward(&x, &a, &s);
    let base = SphereBase::new(3).unwrap();
    let expect = base.base_score_t(&x, &a, &s) + &out / s.unsqueeze(1);
    let dsm_expect = &out / s.unsqueeze(1);
    let arc: Arc<dyn TensorBase> = Arc::new(base);
    assert!(arc.base_name().contains("SphereBase"));
    let copy = net.deep_copy();
    let mad = ResidualScore::new(net, Some(arc), schedule);
    let dsm = ResidualScore::new(copy, None, schedule);
    assert!(mad.score(&x, &t).allclose(&expect, 1e-12, 1e-12, false));
    assert!(dsm.score(&x, &t).allclose(&dsm_expect, 1e-12, 1e-12, false));
    assert!(dsm.residual(&x, &t).allclose(&dsm_expect, 1e-12, 1e-12, false));
    // Inputs of another dtype are converted to the network's and the result back.
    let s32 = dsm.score(&x.to_kind(Kind::Float), &t.to_kind(Kind::Float));
    assert_eq!(s32.kind(), Kind::Float);
    assert!(s32.to_kind(Kind::Double).allclose(&dsm_expect, 1e-4, 1e-4, false));
    fn is_score<S: Score>(_: &S) {}
    is_score(&mad);
}

#[test]
fn invalid_network_configs_name_the_field() {
    let c = cfg(Activation::Silu);
    let e = MlpConfig { width: 0, ..c }.check().unwrap_err().to_string();
    assert_eq!(e, "model.width = 0 is invalid: expected >= 1 and <= 2^20");
    let e = MlpConfig { depth: 0, ..c }.check().unwrap_err().to_string();
    assert!(e.starts_with("model.depth = 0"), "{e}");
    let e = MlpConfig { n_freqs: -1, ..c }.check().unwrap_err().to_string();
    assert!(e.starts_with("model.n_freqs = -1"), "{e}");
    let vs = nn::VarStore::new(Device::Cpu);
    let e = ScoreMlp::new(&vs.root(), &c, &[3, 0], &mut ChaCha8Rng::seed_from_u64(0)).unwrap_err().to_string();
    assert!(e.starts_with("point_shape"), "{e}");
}
