//! AdamW against a hand-computed step, the learning-rate schedule, gradient clipping and the EMA.

use tch::{Kind, Tensor};
use train::{clip_grad_norm, AdamW, Ema, OptimConfig};

fn vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap()
}

fn config() -> OptimConfig {
    OptimConfig {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.5,
        warmup_steps: 0,
        min_lr_frac: 0.0,
        grad_clip: None,
        ema_decay: 0.9,
    }
}

#[test]
fn adamw_matches_hand_computed_steps() {
    let c = config();
    let mut p = Tensor::from_slice(&[1.0f64, -2.0]);
    let mut adam = AdamW::new(&c, &p);
    // Reference in plain f64.
    let (mut pr, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
    let grads = [[0.5, -1.5], [0.25, 3.0], [-1.0, 0.125]];
    let lrs = [0.1, 0.05, 0.02];
    for (n, (g, lr)) in grads.iter().zip(lrs).enumerate() {
        adam.step(&mut p, &Tensor::from_slice(g), lr);
        let n = n as i32 + 1;
        for i in 0..2 {
            pr[i] *= 1.0 - lr * c.weight_decay;
            m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
            v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
            let mhat = m[i] / (1.0 - c.beta1.powi(n));
            let vhat = v[i] / (1.0 - c.beta2.powi(n));
            pr[i] -= lr * mhat / (vhat.sqrt() + c.eps);
        }
        let got = vec(&p);
        for i in 0..2 {
            assert!((got[i] - pr[i]).abs() < 1e-12, "step {n} coordinate {i}: {} vs {}", got[i], pr[i]);
        }
    }
    // The very first step moves each coordinate by about lr (sign of the gradient) plus the decay.
    assert_eq!(adam.n_steps(), 3);
    let (m_t, v_t) = adam.moments();
    assert!((vec(m_t)[0] - m[0]).abs() < 1e-12 && (vec(v_t)[1] - v[1]).abs() < 1e-12);
}

#[test]
fn adamw_works_in_f32_on_a_flat_buffer() {
    let c = OptimConfig { weight_decay: 0.0, ..config() };
    let mut p = Tensor::zeros([5], (Kind::Float, tch::Device::Cpu));
    let mut adam = AdamW::new(&c, &p);
    let g = Tensor::from_slice(&[1.0f32, -1.0, 2.0, -2.0, 0.5]);
    adam.step(&mut p, &g, 0.1);
    // First step: m_hat = g, v_hat = g^2, so the update is -lr sign(g) (up to eps).
    let got = vec(&p);
    for (x, s) in got.iter().zip([-1.0, 1.0, -1.0, 1.0, -1.0]) {
        assert!((x - 0.1 * s).abs() < 1e-6, "{got:?}");
    }
}

#[test]
fn warmup_then_cosine_decay_to_the_floor() {
    let c = OptimConfig { lr: 1.0, warmup_steps: 10, min_lr_frac: 0.1, ..OptimConfig::default() };
    let total = 110;
    assert!((c.lr_at(0, total) - 0.1).abs() < 1e-15);
    assert!((c.lr_at(4, total) - 0.5).abs() < 1e-15);
    assert!((c.lr_at(9, total) - 1.0).abs() < 1e-15);
    assert!((c.lr_at(10, total) - 1.0).abs() < 1e-15);
    // Half-way through the decay: floor + (1 - floor) / 2.
    assert!((c.lr_at(60, total) - 0.55).abs() < 1e-12);
    // A quarter: floor + (1 - floor) (1 + cos(pi / 4)) / 2.
    let q = 0.1 + 0.9 * 0.5 * (1.0 + std::f64::consts::FRAC_PI_4.cos());
    assert!((c.lr_at(35, total) - q).abs() < 1e-12);
    // Monotone after the warm-up, positive at every step taken, at the floor past the end.
    let lrs: Vec<f64> = (10..total).map(|s| c.lr_at(s, total)).collect();
    assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    assert!(lrs.iter().all(|&l| l > 0.1));
    assert!((c.lr_at(total, total) - 0.1).abs() < 1e-15);
    assert!((c.lr_at(total + 50, total) - 0.1).abs() < 1e-15);
    // No warm-up: the first step uses the peak.
    let c0 = OptimConfig { warmup_steps: 0, ..c };
    assert!((c0.lr_at(0, total) - 1.0).abs() < 1e-15);
}

#[test]
fn clipping_bounds_the_norm_and_reports_the_norm_before() {
    let mut g = Tensor::from_slice(&[3.0f64, 4.0, 0.0]);
    let norm = clip_grad_norm(&mut g, Some(1.0));
    assert!((norm - 5.0).abs() < 1e-12);
    let after = vec(&g);
    let n_after = after.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((n_after - 1.0).abs() < 1e-12, "{after:?}");
    assert!((after[0] - 0.6).abs() < 1e-12 && (after[1] - 0.8).abs() < 1e-12);
    // Below the bound or without a bound: unchanged.
    let mut g = Tensor::from_slice(&[0.3f64, 0.4]);
    assert!((clip_grad_norm(&mut g, Some(1.0)) - 0.5).abs() < 1e-12);
    assert_eq!(vec(&g), vec![0.3, 0.4]);
    let mut g = Tensor::from_slice(&[30.0f64, 40.0]);
    assert!((clip_grad_norm(&mut g, None) - 50.0).abs() < 1e-12);
    assert_eq!(vec(&g), vec![30.0, 40.0]);
}

#[test]
fn ema_update_is_a_convex_combination() {
    let p0 = Tensor::from_slice(&[1.0f64, 2.0]);
    let mut ema = Ema::new(&p0, 0.9);
    let p1 = Tensor::from_slice(&[3.0f64, -2.0]);
    ema.update(&p1);
    let got = vec(ema.shadow());
    assert!((got[0] - (0.9 * 1.0 + 0.1 * 3.0)).abs() < 1e-12);
    assert!((got[1] - (0.9 * 2.0 - 0.1 * 2.0)).abs() < 1e-12);
    ema.update(&p1);
    let got = vec(ema.shadow());
    assert!((got[0] - (0.81 * 1.0 + 0.19 * 3.0)).abs() < 1e-12, "{got:?}");
    // The average is a copy: changing the parameters in place does not touch it.
    let mut p = p1.copy();
    let e = Ema::new(&p, 0.5);
    let _ = p.g_mul_scalar_(0.0);
    assert_eq!(vec(e.shadow()), vec![3.0, -2.0]);
    // Decay 0 follows the parameters exactly.
    let mut e0 = Ema::new(&p0, 0.0);
    e0.update(&p1);
    assert_eq!(vec(e0.shadow()), vec![3.0, -2.0]);
}

#[test]
fn invalid_optimiser_configs_name_the_field() {
    let cases: [(OptimConfig, &str); 6] = [
        (OptimConfig { lr: 0.0, ..config() }, "optim.lr"),
        (OptimConfig { beta1: 1.0, ..config() }, "optim.beta1"),
        (OptimConfig { beta2: -0.1, ..config() }, "optim.beta2"),
        (OptimConfig { weight_decay: f64::NAN, ..config() }, "optim.weight_decay"),
        (OptimConfig { grad_clip: Some(0.0), ..config() }, "optim.grad_clip"),
        (OptimConfig { ema_decay: 1.0, ..config() }, "optim.ema_decay"),
    ];
    for (c, field) in cases {
        let e = c.check().unwrap_err().to_string();
        assert!(e.starts_with(field) && e.contains("expected"), "{e}");
    }
    assert!(config().check().is_ok());
}

/// Buffers longer than one serial chunk give the same numbers as whole-tensor formulas.
#[test]
fn chunked_buffers_match_whole_tensor_formulas() {
    let n = 3 * train::SERIAL_CHUNK + 17;
    let opts = (Kind::Double, tch::Device::Cpu);
    tch::manual_seed(5);
    let p0 = Tensor::randn([n], opts);
    let g0 = Tensor::randn([n], opts) * 0.01;
    let c = config();
    // AdamW, two steps.
    let mut p = p0.copy();
    let mut adam = AdamW::new(&c, &p);
    let (mut pr, mut m, mut v) = (p0.copy(), p0.zeros_like(), p0.zeros_like());
    for step in 1..=2 {
        let g = &g0 * step as f64;
        adam.step(&mut p, &g, 0.05);
        pr = &pr * (1.0 - 0.05 * c.weight_decay);
        m = &m * c.beta1 + &g * (1.0 - c.beta1);
        v = &v * c.beta2 + g.square() * (1.0 - c.beta2);
        let mhat = &m / (1.0 - c.beta1.powi(step));
        let vhat = &v / (1.0 - c.beta2.powi(step));
        pr = &pr - mhat * 0.05 / (vhat.sqrt() + c.eps);
    }
    assert!(p.allclose(&pr, 1e-12, 1e-12, false));
    // Clipping.
    let mut g = g0.copy();
    let norm = clip_grad_norm(&mut g, Some(0.1));
    let whole = g0.norm().double_value(&[]);
    assert!((norm - whole).abs() < 1e-12 * whole);
    assert!((g.norm().double_value(&[]) - 0.1).abs() < 1e-12);
    assert!(g.allclose(&(&g0 * (0.1 / whole)), 1e-12, 1e-15, false));
    // EMA.
    let mut ema = Ema::new(&p0, 0.99);
    ema.update(&g0);
    assert!(ema.shadow().allclose(&(&p0 * 0.99 + &g0 * 0.01), 1e-12, 1e-15, false));
}
