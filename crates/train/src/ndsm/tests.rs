use super::*;
use crate::{Checkpoint, OptimConfig, RunState};
use nalgebra::{DMatrix, DVector};

fn std_normal(d: usize) -> GaussianMixture {
    GaussianMixture::new(vec![1.0], vec![DVector::zeros(d)], vec![DMatrix::identity(d, d)]).unwrap()
}

fn two_modes() -> GaussianMixture {
    GaussianMixture::new(
        vec![0.7, 0.3],
        vec![DVector::from_vec(vec![-1.5, 0.0]), DVector::from_vec(vec![1.5, 0.5])],
        vec![DMatrix::from_row_slice(2, 2, &[0.3, 0.1, 0.1, 0.4]), DMatrix::identity(2, 2) * 0.25],
    )
    .unwrap()
}

fn mean_and_se(v: &Tensor) -> (f64, f64) {
    let n = v.size()[0] as f64;
    let mean = v.mean(Kind::Double).double_value(&[]);
    let sd = v.std(true).double_value(&[]);
    (mean, sd / n.sqrt())
}

/// Fills the output layer (zero at initialisation) with N(0, scale^2) entries so that the network is a
/// non-trivial score.
fn randomise_output(net: &NdsmScoreNet, scale: f64, seed: u64) {
    let depth = net.mlp().config().depth;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let _guard = tch::no_grad_guard();
    for (name, mut p) in net.mlp().named_parameters() {
        if name.starts_with(&format!("layers.{depth}.")) {
            let size = p.size();
            let n: i64 = size.iter().product();
            let r = randn(&mut rng, n, 1, p.kind(), p.device()).reshape(&size[..]) * scale;
            p.copy_(&r);
        }
    }
}

#[test]
fn config_errors_name_the_field() {
    let bad = |c: NdsmConfig| NdsmSde::new(&c).unwrap_err().to_string();
    assert!(bad(NdsmConfig { beta_min: 0.0, ..NdsmConfig::default() }).contains("sde.beta_min"));
    assert!(bad(NdsmConfig { beta_max: 0.05, ..NdsmConfig::default() }).contains("sde.beta_max"));
    assert!(bad(NdsmConfig { n_steps: 0, ..NdsmConfig::default() }).contains("sde.n_steps"));
    let c = NdsmTrainConfig { batch_size: 0, ..NdsmTrainConfig::default() };
    assert!(NdsmTrainer::new(c, 2, Device::Cpu).unwrap_err().to_string().contains("batch_size"));
}

#[test]
fn transitions_are_seeded_and_consistent() {
    let pi = two_modes();
    let sde = NdsmSde::new(&NdsmConfig { n_steps: 10, ..NdsmConfig::default() }).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let data = pi.sample_t(50, &mut rng, Kind::Double, Device::Cpu);
    let draw = |seed| sde.sample_transitions(&pi, &data, 40, &mut ChaCha8Rng::seed_from_u64(seed));
    let (a, b) = (draw(1), draw(1));
    assert!(a.x_next.equal(&b.x_next) && a.z.equal(&b.z));
    assert_eq!(a.step_idx, b.step_idx);
    // x_next = mu + ns z, mu = x_prev + beta h s_pi(x_prev), and step 0 starts at the data point.
    let ns = a.noise_scale.unsqueeze(1);
    assert!(f64::try_from((&a.x_next - &a.mu - &a.z * &ns).abs().max()).unwrap() < 1e-12);
    let beta = a.t_prev.shallow_clone() * (sde.config().beta_max - sde.config().beta_min) + sde.config().beta_min;
    let mu = &a.x_prev + pi.score_t(&a.x_prev) * (beta * sde.h()).unsqueeze(1);
    assert!(f64::try_from((&a.mu - mu).abs().max()).unwrap() < 1e-12);
    for (i, &k) in a.step_idx.iter().enumerate() {
        if k == 0 {
            assert!(a.x_prev.get(i as i64).equal(&a.x0.get(i as i64)));
        }
    }
    assert!(a.step_idx.contains(&0) && a.step_idx.iter().any(|&k| k > 5));
}

/// pi = data law = N(0, 1) in 1-D: within the family `a s_pi`, the NDSM loss is minimised by the score
/// of the law of X_{n+1} under the Euler-Maruyama chain, `-x / v_{n+1}` with
/// `v_{n+1} = (1 - beta_n h)^2 v_n + 2 beta_n h`, `v_0 = 1`; over uniform n with weights lambda_n,
/// `a* = sum lambda_n / sum lambda_n v_{n+1}`. The loss is quadratic in `a`, so three values give its
/// minimiser.
#[test]
fn loss_minimiser_is_the_score_of_the_discrete_marginal() {
    let pi = std_normal(1);
    let sde = NdsmSde::new(&NdsmConfig { beta_min: 0.1, beta_max: 10.0, n_steps: 20 }).unwrap();
    let (h, n) = (sde.h(), sde.n_steps());
    let (mut num, mut den, mut v) = (0.0, 0.0, 1.0);
    for k in 0..n {
        let beta = sde.beta(sde.time(k));
        v = (1.0 - beta * h).powi(2) * v + 2.0 * beta * h;
        let lambda = sde.sigma(sde.time(k + 1)).powi(2);
        num += lambda;
        den += lambda * v;
    }
    let a_star = num / den;
    assert!(a_star < 0.97, "the test needs a discretisation effect to see: a* = {a_star}");

    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let data = pi.sample_t(40_000, &mut rng, Kind::Double, Device::Cpu);
    let tr = sde.sample_transitions(&pi, &data, 40_000, &mut rng);
    let w = NdsmWeighting::SigmaSquared;
    let pi_ref = &pi;
    let loss_at = |a: f64, cv| {
        let s = move |x: &Tensor, _t: &Tensor| pi_ref.score_t(x) * a;
        ndsm_loss(&s, &sde, &tr, w, cv).double_value(&[])
    };
    let estimate = |cv| {
        let (lm, l0, lp) = (loss_at(-1.0, cv), loss_at(0.0, cv), loss_at(1.0, cv));
        (lm - lp) / (2.0 * (lp + lm - 2.0 * l0))
    };
    let a_exact = estimate(ControlVariate::Exact);
    let a_plain = estimate(ControlVariate::None);
    // The relative standard error of either estimate is about 1% at 40k transitions.
    assert!((a_exact - a_star).abs() < 0.03, "exact CV: a_hat = {a_exact}, a* = {a_star}");
    assert!((a_plain - a_star).abs() < 0.05, "no CV: a_hat = {a_plain}, a* = {a_star}");
    // The true marginal score beats perturbed ones on the same transitions.
    let best = loss_at(a_star, ControlVariate::Exact);
    for a in [0.7 * a_star, 1.3 * a_star] {
        assert!(loss_at(a, ControlVariate::Exact) > best);
    }
    let shifted = |x: &Tensor, _t: &Tensor| pi.score_t(x) * a_star + 0.3;
    assert!(ndsm_loss(&shifted, &sde, &tr, w, ControlVariate::Exact).double_value(&[]) > best);
}

#[test]
fn control_variates_have_zero_mean_and_cut_the_loss_variance() {
    let pi = two_modes();
    // Fine steps (beta_max h lambda_max(Sigma^-1) = 0.2): the regime where the plain loss's variance
    // explodes. With coarse steps (n_steps = 50, the product is 0.8) the fixed-coefficient exact control
    // variate can raise the per-sample variance instead (measured: ratio 1.09 for this score).
    let sde = NdsmSde::new(&NdsmConfig { n_steps: 200, ..NdsmConfig::default() }).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let data = pi.sample_t(2000, &mut rng, Kind::Double, Device::Cpu);
    let tr = sde.sample_transitions(&pi, &data, 20_000, &mut rng);
    // A score that is neither the true one nor trivial.
    let score = |x: &Tensor, t: &Tensor| pi.score_t(x) * 0.7 + x.sin() * t.unsqueeze(1);
    let exact = exact_control_variate(&score, &tr);
    let (m, se) = mean_and_se(&exact);
    assert!(m.abs() < 4.0 * se, "exact control variate mean {m} +- {se}");
    let ncv = NeuralCv::new(&NeuralCvConfig::default(), 2, Kind::Double, Device::Cpu).unwrap();
    randomise_output(ncv.net(), 0.5, 1);
    let neural = ncv.control_variate(&score, &sde, &tr);
    let (m, se) = mean_and_se(&neural.detach());
    assert!(m.abs() < 4.0 * se, "neural control variate mean {m} +- {se}");

    let w = NdsmWeighting::SigmaSquared;
    let plain = ndsm_per_sample_loss(&score, &sde, &tr, w, ControlVariate::None);
    let with_exact = ndsm_per_sample_loss(&score, &sde, &tr, w, ControlVariate::Exact);
    // Loss minus control variate, computed two ways.
    let lambda = w.weights(&sde, &tr.t_next);
    let diff = (&plain - &with_exact - &exact * &lambda).abs().max();
    assert!(f64::try_from(diff).unwrap() < 1e-6 * f64::try_from(plain.abs().max()).unwrap());
    // Same mean, much smaller variance.
    let (mp, sp) = mean_and_se(&plain);
    let (me, sxe) = mean_and_se(&with_exact);
    assert!((mp - me).abs() < 4.0 * sp, "means {mp} +- {sp} and {me} +- {sxe}");
    let ratio = (sxe / sp).powi(2);
    eprintln!("per-sample loss variance ratio exact / none at h = 1/200: {ratio:.3e}");
    assert!(ratio < 0.5, "variance ratio exact / none = {ratio}");
}

#[test]
fn variance_ratios_at_fixed_parameters_and_a_fitted_neural_control_variate() {
    let pi = two_modes();
    let sde = NdsmSde::new(&NdsmConfig { n_steps: 50, ..NdsmConfig::default() }).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let data = pi.sample_t(1000, &mut rng, Kind::Double, Device::Cpu);
    let model = MlpConfig { width: 32, depth: 2, ..MlpConfig::default() };
    let net = NdsmScoreNet::new(&model, 2, Kind::Double, Device::Cpu, 3).unwrap();
    randomise_output(&net, 0.3, 2);
    let score = |x: &Tensor, t: &Tensor| net.score(&sde, x, t);
    let w = NdsmWeighting::SigmaSquared;
    let cv_config =
        NeuralCvConfig { model: MlpConfig { width: 32, depth: 2, ..MlpConfig::default() }, ..Default::default() };
    let mut standalone = NeuralCv::new(&cv_config, 2, Kind::Double, Device::Cpu).unwrap();
    let on_exact_config = NeuralCvConfig { form: NeuralCvForm::OnExact, ..cv_config };
    let mut on_exact = NeuralCv::new(&on_exact_config, 2, Kind::Double, Device::Cpu).unwrap();
    // MANIFOLD_GEN_SLOW_TESTS=1: more batches and a longer fit of the neural control variate.
    let slow = std::env::var("MANIFOLD_GEN_SLOW_TESTS").is_ok_and(|v| !v.is_empty() && v != "0");
    let (n_batches, n_fit) = if slow { (64, 400) } else { (12, 60) };
    let config = VarianceConfig { batch_size: 256, n_batches, weighting: w, seed: 5 };
    let before = estimator_variance(&net, &sde, &pi, &data, Some(&standalone), &config).unwrap();
    let mut fit_rng = ChaCha8Rng::seed_from_u64(17);
    let (mut first, mut last) = (0.0, 0.0);
    // One simulation for all fitting batches.
    let pool = sde.sample_transitions(&pi, &data, 256 * n_fit as i64, &mut fit_rng);
    for i in 0..n_fit {
        let tr = pool.narrow(256 * i as i64, 256);
        let o = standalone.fit_step(&score, &sde, &tr, w);
        on_exact.fit_step(&score, &sde, &tr, w);
        if i < 10 {
            first += o / 10.0;
        }
        if i >= n_fit - 10 {
            last += o / 10.0;
        }
    }
    assert!(last < first, "the neural control variate's objective did not fall: {first} -> {last}");
    let after = estimator_variance(&net, &sde, &pi, &data, Some(&standalone), &config).unwrap();
    let after_on_exact = estimator_variance(&net, &sde, &pi, &data, Some(&on_exact), &config).unwrap();
    for r in before.iter().chain(&after).chain(&after_on_exact) {
        assert!(r.loss_var.is_finite() && r.grad_var.is_finite() && r.loss_mean.is_finite(), "{r:?}");
    }
    let none = &after[1];
    assert_eq!(none.estimator, Estimator::Ndsm);
    let (l_exact, g_exact) = after[2].ratios_to(none);
    let (l_neural0, g_neural0) = before[3].ratios_to(&before[1]);
    let (l_neural, g_neural) = after[3].ratios_to(none);
    let (l_on_exact, g_on_exact) = after_on_exact[3].ratios_to(&after_on_exact[1]);
    let (l_dsm, g_dsm) = after[0].ratios_to(none);
    eprintln!(
        "variance ratios to NDSM without control variates (loss, gradient), {} batches of {}:\n  \
         DSM ({l_dsm:.3e}, {g_dsm:.3e})\n  exact ({l_exact:.3e}, {g_exact:.3e})\n  \
         neural standalone at init ({l_neural0:.3e}, {g_neural0:.3e})\n  \
         neural standalone after {n_fit} steps ({l_neural:.3e}, {g_neural:.3e})\n  \
         neural on exact after {n_fit} steps ({l_on_exact:.3e}, {g_on_exact:.3e})",
        config.n_batches, config.batch_size
    );
    assert!(l_exact < 0.5 && g_exact < 0.5, "exact: ({l_exact}, {g_exact})");
    assert!(l_neural < l_neural0, "fitting did not help: {l_neural0} -> {l_neural}");
    if slow {
        assert!(l_neural < 1.2 * l_exact, "neural {l_neural} against exact {l_exact}");
    }
    // The standalone control variate does not depend on the score network: same gradients.
    assert!((g_neural - 1.0).abs() < 1e-9, "standalone neural gradient ratio {g_neural}");
    assert!((g_on_exact - g_exact).abs() < 1e-9 * g_exact.max(1.0), "{g_on_exact} vs {g_exact}");
}

#[test]
fn gradients_are_finite_for_every_variant() {
    let pi = two_modes();
    let sde = NdsmSde::new(&NdsmConfig { n_steps: 1000, beta_max: 20.0, ..NdsmConfig::default() }).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let data = pi.sample_t(100, &mut rng, Kind::Float, Device::Cpu);
    let model = MlpConfig { width: 16, depth: 2, ..MlpConfig::default() };
    let net = NdsmScoreNet::new(&model, 2, Kind::Float, Device::Cpu, 1).unwrap();
    randomise_output(&net, 0.3, 4);
    let ncv = NeuralCv::new(&NeuralCvConfig::default(), 2, Kind::Float, Device::Cpu).unwrap();
    let score = |x: &Tensor, t: &Tensor| net.score(&sde, x, t);
    // Small steps (h = 1e-3) are where the plain loss is largest.
    let tr = sde.sample_transitions(&pi, &data, 128, &mut rng);
    for cv in [ControlVariate::None, ControlVariate::Exact, ControlVariate::Neural(&ncv)] {
        for w in [NdsmWeighting::Unit, NdsmWeighting::SigmaSquared] {
            let loss = ndsm_loss(&score, &sde, &tr, w, cv);
            let grads = Tensor::run_backward(&[&loss], &net.parameters(), false, false);
            assert!(loss.double_value(&[]).is_finite());
            for g in grads {
                assert!(bool::try_from(g.isfinite().all()).unwrap(), "{cv:?} {w:?}");
            }
        }
    }
}

/// pi = data law: every marginal is pi, the reverse process with the exact score is Langevin dynamics for
/// pi and keeps it (up to the O(h) bias of the scheme).
#[test]
fn reverse_sampler_with_the_exact_score_keeps_pi() {
    let pi = two_modes();
    let sde = NdsmSde::new(&NdsmConfig { n_steps: 100, beta_min: 0.1, beta_max: 2.0 }).unwrap();
    let score = |x: &Tensor, _t: &Tensor| pi.score_t(x);
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let x = reverse_sample(&score, &sde, &pi, 8000, &mut rng, Kind::Double, Device::Cpu);
    assert_eq!(x.size(), [8000, 2]);
    // Mean (0.7 (-1.5, 0) + 0.3 (1.5, 0.5)) = (-0.6, 0.15); mode weights by the sign of x_0. Standard
    // errors at n = 8000: 0.016 and 0.006 for the mean, 0.005 for the weight.
    let mean = x.mean_dim(0, false, Kind::Double);
    assert!((mean.double_value(&[0]) + 0.6).abs() < 0.05, "{mean:?}");
    assert!((mean.double_value(&[1]) - 0.15).abs() < 0.03, "{mean:?}");
    let right = f64::try_from(x.select(1, 0).gt(0.0).to_kind(Kind::Double).mean(Kind::Double)).unwrap();
    assert!((right - 0.3).abs() < 0.02, "weight of the right mode {right}");
}

#[test]
fn trainer_is_seeded_and_lowers_the_loss() {
    let pi = two_modes();
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let data = pi.sample_t(500, &mut rng, Kind::Double, Device::Cpu);
    let mut config = NdsmTrainConfig {
        model: MlpConfig { width: 32, depth: 2, ..MlpConfig::default() },
        sde: NdsmConfig { n_steps: 20, ..NdsmConfig::default() },
        optim: OptimConfig { warmup_steps: 5, lr: 3e-3, ..OptimConfig::default() },
        steps: 40,
        batch_size: 128,
        ..NdsmTrainConfig::default()
    };
    for cv in [
        NdsmCvChoice::None,
        NdsmCvChoice::Exact,
        NdsmCvChoice::Neural { config: NeuralCvConfig { form: NeuralCvForm::OnExact, ..Default::default() } },
    ] {
        config.control_variate = cv;
        let run = || {
            let mut t = NdsmTrainer::new(config, 2, Device::Cpu).unwrap();
            (0..config.steps).map(|_| t.step(&pi, &data).unwrap()).collect::<Vec<_>>()
        };
        let a = run();
        if matches!(cv, NdsmCvChoice::Neural { .. }) {
            assert_eq!(a, run(), "same config and seed, same numbers");
        }
        assert!(a.iter().all(|r| r.loss.is_finite() && r.grad_norm.is_finite()));
        let mean = |r: &[NdsmStepReport]| r.iter().map(|r| r.loss).sum::<f64>() / r.len() as f64;
        if !matches!(cv, NdsmCvChoice::None) {
            assert!(mean(&a[30..]) < mean(&a[..10]), "{cv:?}: {} -> {}", mean(&a[..10]), mean(&a[30..]));
        }
    }
    let t = NdsmTrainer::new(config, 2, Device::Cpu).unwrap();
    let ema = t.ema_net().unwrap();
    let x = data.to_kind(Kind::Float).narrow(0, 0, 4);
    assert_eq!(ema.score(t.sde(), &x, &Tensor::full([4], 0.5, (Kind::Float, Device::Cpu))).size(), [4, 2]);
}

/// Writes the checkpoint's tensors to a safetensors file and its state through JSON, and reads both back.
fn round_trip(checkpoint: &Checkpoint, dir: &std::path::Path) -> Checkpoint {
    let file = dir.join("weights.safetensors");
    Tensor::write_safetensors(&checkpoint.tensors, &file).unwrap();
    let tensors = Tensor::read_safetensors(&file).unwrap();
    let state: RunState = serde_json::from_str(&serde_json::to_string(&checkpoint.state).unwrap()).unwrap();
    Checkpoint { tensors, state }
}

#[test]
fn checkpoint_and_resume_continue_bitwise() {
    let pi = two_modes();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let data = pi.sample_t(300, &mut rng, Kind::Double, Device::Cpu);
    let dir = std::env::temp_dir().join(format!("ndsm-checkpoint-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = NdsmTrainConfig {
        model: MlpConfig { width: 16, depth: 2, ..MlpConfig::default() },
        sde: NdsmConfig { n_steps: 10, ..NdsmConfig::default() },
        optim: OptimConfig { warmup_steps: 3, lr: 3e-3, ..OptimConfig::default() },
        steps: 12,
        batch_size: 64,
        ..NdsmTrainConfig::default()
    };
    let (n, k) = (config.steps, 5);
    for cv in [
        NdsmCvChoice::None,
        NdsmCvChoice::Exact,
        NdsmCvChoice::Neural { config: NeuralCvConfig { form: NeuralCvForm::OnExact, ..Default::default() } },
    ] {
        config.control_variate = cv;
        let mut straight = NdsmTrainer::new(config, 2, Device::Cpu).unwrap();
        let a: Vec<_> = (0..n).map(|_| straight.step(&pi, &data).unwrap()).collect();
        let mut first = NdsmTrainer::new(config, 2, Device::Cpu).unwrap();
        let mut b: Vec<_> = (0..k).map(|_| first.step(&pi, &data).unwrap()).collect();
        let checkpoint = round_trip(&first.checkpoint(), &dir);
        assert_eq!(checkpoint.state.step, k);
        drop(first);
        let mut resumed = NdsmTrainer::resume(config, 2, Device::Cpu, &checkpoint).unwrap();
        assert_eq!(resumed.steps_done(), k);
        b.extend((k..n).map(|_| resumed.step(&pi, &data).unwrap()));
        assert_eq!(a, b, "{cv:?}: the same losses, gradient norms and learning rates");
        let (ca, cb) = (straight.checkpoint(), resumed.checkpoint());
        assert_eq!(ca.state, cb.state);
        assert_eq!(ca.tensors.len(), cb.tensors.len());
        for ((na, ta), (nb, tb)) in ca.tensors.iter().zip(&cb.tensors) {
            assert_eq!(na, nb);
            assert!(ta.equal(tb), "{cv:?}: {na} differs after resuming");
        }
        if matches!(cv, NdsmCvChoice::Neural { .. }) {
            assert!(ca.tensors.iter().any(|(n, _)| n.starts_with(CV_ADAM_V_PREFIX)));
            assert_eq!(resumed.neural_cv().unwrap().n_steps(), n);
        }
    }
    let checkpoint = round_trip(&NdsmTrainer::new(config, 2, Device::Cpu).unwrap().checkpoint(), &dir);
    let other = NdsmTrainConfig { batch_size: 32, seed: 3, ..config };
    let err = NdsmTrainer::resume(other, 2, Device::Cpu, &checkpoint).unwrap_err().to_string();
    assert!(err.contains("batch_size differs") && err.contains("seed differs"), "{err}");
    assert!(!err.contains("steps differs"), "{err}");
    let err = NdsmTrainer::resume(config, 3, Device::Cpu, &checkpoint).unwrap_err().to_string();
    assert!(err.contains("point_shape"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
