//! The losses: MAD with the exact base score of uniform data is already optimal at a zero network, and
//! both losses are finite and decrease on toys, for VE and VP schedules.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use scores::base::sphere::SphereBase;
use scores::{BaseScore, Schedule};
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};
use train::{
    per_sample_loss, residual_loss, LossBatch, MlpConfig, Objective, OptimConfig, Precision, ScoreMlp, TensorBase,
    TrainConfig, Trainer, Weighting,
};

fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// `n` points in R^d: normalised `center + spread * N(0, I)` (uniform on S^{d-1} without a center).
fn sphere_points(rng: &mut ChaCha8Rng, n: usize, d: usize, center: Option<&[f64]>, spread: f64) -> Tensor {
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let mut v = normals(rng, d);
        if let Some(c) = center {
            v.iter_mut().zip(c).for_each(|(x, c)| *x = c + spread * *x);
        }
        let r = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        out.extend(v.iter().map(|x| x / r));
    }
    Tensor::from_slice(&out).reshape([n as i64, d as i64])
}

fn batch(rng: &mut ChaCha8Rng, x0: Tensor, t_eps: f64) -> LossBatch {
    let size = x0.size();
    let n = size[0] as usize;
    let t: Vec<f64> = (0..n).map(|_| t_eps + (1.0 - t_eps) * rand::Rng::random::<f64>(rng)).collect();
    let eps = Tensor::from_slice(&normals(rng, x0.numel())).reshape(&size[..]);
    LossBatch { x0, t: Tensor::from_slice(&t), eps }
}

fn zero_net(dim: i64) -> ScoreMlp {
    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    let net = ScoreMlp::new(
        &vs.root(),
        &MlpConfig { width: 8, depth: 1, ..MlpConfig::default() },
        &[dim],
        &mut ChaCha8Rng::seed_from_u64(0),
    )
    .unwrap();
    net
}

/// With uniform data on S^2 the base score is the true score, so delta = 0 is optimal: the MAD loss of a
/// zero network is the irreducible minimum E[D - sigma^2 |s(x_t)|^2] (Tweedie: E[eps | x_t] = -sigma s),
/// far below the DSM loss of the same network, E|eps|^2 = D.
#[test]
fn mad_with_the_true_base_is_optimal_at_zero() {
    let n = 20_000;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let base = SphereBase::new(3).unwrap();
    let net = zero_net(3);
    for schedule in [Schedule::ve(0.01, 10.0).unwrap(), Schedule::vp(0.1, 20.0).unwrap()] {
        let pts = sphere_points(&mut rng, n, 3, None, 0.0);
        let b = batch(&mut rng, pts, 1e-3);
        let mad = residual_loss(&net, Some(&base), &schedule, Weighting::SigmaSquared, &b).double_value(&[]);
        let dsm = residual_loss(&net, None, &schedule, Weighting::SigmaSquared, &b).double_value(&[]);
        // The per-sample and the fused mean agree.
        let mad_ps = per_sample_loss(&net, Some(&base), &schedule, Weighting::SigmaSquared, &b).mean(Kind::Double);
        assert!((mad_ps.double_value(&[]) - mad).abs() < 1e-10);

        let (alpha, sigma) = (schedule.alpha_t(&b.t), schedule.sigma_t(&b.t));
        let x_t = &b.x0 * alpha.unsqueeze(1) + &b.eps * sigma.unsqueeze(1);
        let s = base.base_score_t(&x_t, &alpha, &sigma);
        let irreducible = (s * sigma.unsqueeze(1)).square().sum_dim_intlist(1, false, None).neg() + 3.0;
        let per = per_sample_loss(&net, Some(&base), &schedule, Weighting::SigmaSquared, &b);
        // The per-sample difference has mean zero; compare its mean with its standard error.
        let diff = &per - &irreducible;
        let se = diff.std(true).double_value(&[]) / (n as f64).sqrt();
        let (gap, irreducible) = (diff.mean(None).double_value(&[]), irreducible.mean(None).double_value(&[]));
        assert!(gap.abs() < 4.0 * se, "{schedule:?}: mad {mad} vs irreducible {irreducible} (se {se})");
        assert!((dsm - 3.0).abs() < 0.1, "{schedule:?}: dsm {dsm}");
        assert!(mad < dsm - 1.0, "{schedule:?}: mad {mad} dsm {dsm}");

        // And no constant offset of the output lowers the MAD loss beyond noise: its gradient in a
        // constant c, -2 E[target], vanishes (it does not for a wrong base, see below).
        // Measured along the radial direction x_t / |x_t|, where the score of the data lives.
        let unit = &x_t / x_t.norm_scalaropt_dim(2.0, [1], true);
        let radial = |target: Tensor| {
            let r = (target * &unit).sum_dim_intlist(1, false, None);
            (r.mean(None).double_value(&[]), r.std(true).double_value(&[]) / (n as f64).sqrt())
        };
        let (m_mad, se_mad) = radial(-&b.eps - base.base_score_t(&x_t, &alpha, &sigma) * sigma.unsqueeze(1));
        assert!(m_mad.abs() < 4.0 * se_mad, "{schedule:?}: {m_mad} (se {se_mad})");
        let (m_dsm, se_dsm) = radial(-&b.eps);
        assert!(m_dsm.abs() > 20.0 * se_dsm, "{schedule:?}: {m_dsm} (se {se_dsm})");
    }
}

/// The likelihood weighting only rescales the VE loss (g^2 / sigma^2 = 2 ln(sigma_max / sigma_min)).
#[test]
fn likelihood_weighting_is_a_constant_for_ve() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let schedule = Schedule::ve(0.01, 10.0).unwrap();
    let pts = sphere_points(&mut rng, 500, 3, None, 0.0);
    let b = batch(&mut rng, pts, 1e-3);
    let net = zero_net(3);
    let base = SphereBase::new(3).unwrap();
    let plain = residual_loss(&net, Some(&base), &schedule, Weighting::SigmaSquared, &b).double_value(&[]);
    let lik = residual_loss(&net, Some(&base), &schedule, Weighting::Likelihood, &b).double_value(&[]);
    let c = 2.0 * (10.0f64 / 0.01).ln();
    assert!((lik / plain - c).abs() < 1e-9 * c, "{lik} {plain}");
}

fn eval_batch(data: &Tensor, n: usize, seed: u64, t_eps: f64, kind: Kind) -> LossBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows = data.size()[0];
    let idx: Vec<i64> = (0..n).map(|_| rand::Rng::random_range(&mut rng, 0..rows)).collect();
    let b = batch(&mut rng, data.index_select(0, &Tensor::from_slice(&idx)), t_eps);
    LossBatch { x0: b.x0.to_kind(kind), t: b.t.to_kind(kind), eps: b.eps.to_kind(kind) }
}

fn toy_config(objective: Objective, schedule: Schedule, steps: u64) -> TrainConfig {
    TrainConfig {
        model: MlpConfig { width: 64, depth: 2, n_freqs: 6, ..MlpConfig::default() },
        schedule,
        objective,
        optim: OptimConfig { lr: 3e-3, warmup_steps: 20, ..OptimConfig::default() },
        precision: Precision::F32,
        steps,
        batch_size: 128,
        seed: 11,
        checkpoint_every: 0,
        ..TrainConfig::default()
    }
}

/// DSM on two points of the circle (VE) and MAD on a concentrated cluster on S^2 (VP): every loss finite,
/// and the loss on a fixed evaluation batch clearly lower after training.
#[test]
fn losses_are_finite_and_decrease_on_toys() {
    let two_points = Tensor::from_slice(&[1.0f64, 0.0, -1.0, 0.0]).reshape([2, 2]);
    let cluster = sphere_points(&mut ChaCha8Rng::seed_from_u64(3), 2000, 3, Some(&[0.0, 0.0, 1.0]), 0.2);
    type Case = (Objective, Schedule, Tensor, Option<Arc<dyn TensorBase>>, f64);
    let cases: [Case; 2] = [
        (Objective::Dsm, Schedule::ve(0.01, 3.0).unwrap(), two_points, None, 0.8),
        (Objective::Mad, Schedule::vp(0.1, 20.0).unwrap(), cluster, Some(Arc::new(SphereBase::new(3).unwrap())), 0.9),
    ];
    for (objective, schedule, data, base, factor) in cases {
        let config = toy_config(objective, schedule, 300);
        let d = data.size()[1];
        let mut trainer = Trainer::new(config, &[d], base, Device::Cpu).unwrap();
        let eval = eval_batch(&data, 4096, 99, config.t_eps, Kind::Float);
        let before = trainer.loss_on(&eval);
        let mut losses = Vec::new();
        struct Log<'a>(&'a mut Vec<f64>);
        impl train::Observer for Log<'_> {
            fn on_step(&mut self, r: &train::StepReport) -> train::Control {
                assert!(r.loss.is_finite() && r.grad_norm.is_finite() && r.lr > 0.0 && r.steps_per_sec > 0.0);
                self.0.push(r.loss);
                train::Control::Continue
            }
        }
        let outcome = trainer.run(&data, &mut Log(&mut losses)).unwrap();
        assert_eq!(outcome.steps_done, 300);
        assert!(!outcome.stopped_early);
        let after = trainer.loss_on(&eval);
        let ema_after = {
            let ema = trainer.ema_net();
            let b = trainer.score();
            let base = b.base().cloned();
            tch::no_grad(|| {
                residual_loss(&ema, base.as_deref(), &schedule, Weighting::SigmaSquared, &eval).double_value(&[])
            })
        };
        assert!(after.is_finite() && ema_after.is_finite());
        assert!(after < factor * before, "{objective:?}: loss {before} -> {after}");
        let first: f64 = losses[..30].iter().sum::<f64>() / 30.0;
        let last: f64 = losses[losses.len() - 30..].iter().sum::<f64>() / 30.0;
        assert!(last < first, "{objective:?}: running loss {first} -> {last}");
    }
}
