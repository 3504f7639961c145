//! The trainer's hand-written backward pass agrees with autograd on the differentiable loss.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scores::base::sphere::SphereBase;
use scores::Schedule;
use tch::{nn, Device, Kind, Tensor};
use train::{
    loss_and_grad, residual_loss, Activation, FlatParams, LossBatch, MlpConfig, ScoreMlp, TensorBase, Weighting,
};

#[test]
fn fused_loss_and_gradient_match_autograd() {
    let base = SphereBase::new(3).unwrap();
    tch::manual_seed(3);
    let schedules = [Schedule::ve(0.01, 5.0).unwrap(), Schedule::vp(0.1, 20.0).unwrap()];
    for act in [Activation::Silu, Activation::Gelu, Activation::Relu, Activation::Tanh] {
        for (k, schedule) in schedules.iter().enumerate() {
            for weighting in [Weighting::SigmaSquared, Weighting::Likelihood] {
                for with_base in [false, true] {
                    let mut vs = nn::VarStore::new(Device::Cpu);
                    vs.set_kind(Kind::Double);
                    // Width 300 and batch 250: activations above the parallelisation threshold.
                    let config = MlpConfig { width: 300, depth: 2, activation: act, n_freqs: 3 };
                    let net =
                        ScoreMlp::new(&vs.root(), &config, &[3], &mut ChaCha8Rng::seed_from_u64(k as u64)).unwrap();
                    // A non-zero output layer, so every gradient is non-trivial.
                    tch::no_grad(|| {
                        for (_, mut p) in net.named_parameters() {
                            let _ = p.g_add_(&(p.randn_like() * 0.1));
                        }
                    });
                    let n = 250;
                    let opts = (Kind::Double, Device::Cpu);
                    let batch = LossBatch {
                        x0: Tensor::randn([n, 3], opts),
                        t: Tensor::rand([n], opts) * 0.99 + 0.01,
                        eps: Tensor::randn([n, 3], opts),
                    };
                    let b: Option<&dyn TensorBase> = if with_base { Some(&base) } else { None };
                    let loss = residual_loss(&net, b, schedule, weighting, &batch);
                    let params: Vec<Tensor> = net.named_parameters().into_iter().map(|(_, t)| t).collect();
                    let grads = Tensor::run_backward(&[&loss], &params, false, false);
                    let reference = Tensor::cat(&grads.iter().map(|g| g.reshape([-1])).collect::<Vec<_>>(), 0);
                    let mut grad = Tensor::full([net.n_params()], f64::NAN, opts);
                    let value = loss_and_grad(&net, b, schedule, weighting, &batch, &mut grad);
                    let expect = loss.double_value(&[]);
                    let case = format!("{act:?} {schedule:?} {weighting:?} base={with_base}");
                    assert!((value - expect).abs() <= 1e-12 * expect.abs(), "{case}: loss {value} vs {expect}");
                    let err = (&grad - &reference).abs().max().double_value(&[]);
                    let scale = reference.abs().max().double_value(&[]);
                    assert!(err <= 1e-10 * scale, "{case}: gradient error {err} (scale {scale})");
                    // The same through the flat buffer.
                    let mut flat = FlatParams::new(net.named_parameters());
                    let v2 = loss_and_grad(&net, b, schedule, weighting, &batch, flat.grad_mut());
                    assert_eq!(v2.to_bits(), value.to_bits());
                    assert!(flat.grad().equal(&grad));
                }
            }
        }
    }
}

/// In f32 on the CPU the products run through oneDNN (when libtorch has it): the same numbers as autograd
/// through `addmm` up to f32 rounding, bitwise reproducible from call to call.
#[test]
fn fused_f32_matches_autograd_to_rounding() {
    let base = SphereBase::new(3).unwrap();
    tch::manual_seed(5);
    let schedule = Schedule::ve(0.01, 5.0).unwrap();
    for act in [Activation::Silu, Activation::Tanh] {
        let mut vs = nn::VarStore::new(Device::Cpu);
        vs.set_kind(Kind::Float);
        let config = MlpConfig { width: 300, depth: 3, activation: act, n_freqs: 4 };
        let net = ScoreMlp::new(&vs.root(), &config, &[3], &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        tch::no_grad(|| {
            for (_, mut p) in net.named_parameters() {
                let _ = p.g_add_(&(p.randn_like() * 0.1));
            }
        });
        let n = 257;
        let opts = (Kind::Float, Device::Cpu);
        let batch = LossBatch {
            x0: Tensor::randn([n, 3], opts),
            t: Tensor::rand([n], opts) * 0.99 + 0.01,
            eps: Tensor::randn([n, 3], opts),
        };
        let b: Option<&dyn TensorBase> = Some(&base);
        let loss = residual_loss(&net, b, &schedule, Weighting::SigmaSquared, &batch);
        let params: Vec<Tensor> = net.named_parameters().into_iter().map(|(_, t)| t).collect();
        let grads = Tensor::run_backward(&[&loss], &params, false, false);
        let reference = Tensor::cat(&grads.iter().map(|g| g.reshape([-1])).collect::<Vec<_>>(), 0);
        let mut grad = Tensor::full([net.n_params()], f64::NAN, opts);
        let value = loss_and_grad(&net, b, &schedule, Weighting::SigmaSquared, &batch, &mut grad);
        let expect = loss.double_value(&[]);
        assert!((value - expect).abs() <= 1e-5 * expect.abs(), "{act:?}: loss {value} vs {expect}");
        let err = (&grad - &reference).abs().max().double_value(&[]);
        let scale = reference.abs().max().double_value(&[]);
        assert!(err <= 1e-4 * scale, "{act:?}: gradient error {err} (scale {scale})");
        let mut again = grad.zeros_like();
        let v2 = loss_and_grad(&net, b, &schedule, Weighting::SigmaSquared, &batch, &mut again);
        assert_eq!(v2.to_bits(), value.to_bits());
        assert!(again.equal(&grad));
    }
}
