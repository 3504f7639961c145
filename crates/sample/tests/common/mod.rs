//! Exact scores and statistics shared by the integration tests.
#![allow(dead_code)]

use scores::{Schedule, Score};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// The exact score of a mixture of isotropic Gaussians sum_k w_k N(m_k, s0^2 I) noised by a schedule:
/// the noised law at time t is sum_k w_k N(alpha m_k, (alpha^2 s0^2 + sigma^2) I).
/// `s0 = 0` gives a weighted point mass on the m_k.
pub struct MixtureScore {
    pub schedule: Schedule,
    /// K means of dimension n, row-major.
    pub means: Vec<f64>,
    /// K.
    pub k: i64,
    pub s0: f64,
}

impl MixtureScore {
    /// One Gaussian N(mean, s0^2 I).
    pub fn gaussian(schedule: Schedule, mean: &[f64], s0: f64) -> Self {
        Self::new(schedule, &[mean.to_vec()], s0)
    }

    /// Equal weights on `means`.
    pub fn new(schedule: Schedule, means: &[Vec<f64>], s0: f64) -> Self {
        let k = means.len() as i64;
        let flat: Vec<f64> = means.iter().flatten().copied().collect();
        Self { schedule, means: flat, k, s0 }
    }
}

impl Score for MixtureScore {
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let (kind, device) = (x.kind(), x.device());
        let means = Tensor::from_slice(&self.means).reshape([self.k, -1]).to_kind(kind).to_device(device);
        let logw = Tensor::full([self.k], -(self.k as f64).ln(), (kind, device));
        let alpha = self.schedule.alpha_t(t);
        let var = alpha.square() * (self.s0 * self.s0) + self.schedule.sigma_t(t).square();
        // diff[b, k, :] = alpha_b m_k - x_b
        let diff = alpha.reshape([-1, 1, 1]) * means.unsqueeze(0) - x.unsqueeze(1);
        let logits = logw.unsqueeze(0)
            - diff.square().sum_dim_intlist([-1i64].as_slice(), false, kind) / (var.unsqueeze(-1) * 2.0);
        let w = logits.softmax(1, kind);
        (w.unsqueeze(-1) * diff).sum_dim_intlist([1i64].as_slice(), false, kind) / var.unsqueeze(-1)
    }
}

/// The zero score.
pub struct ZeroScore;

impl Score for ZeroScore {
    fn score(&self, x: &Tensor, _t: &Tensor) -> Tensor {
        x.zeros_like()
    }
}

/// The intrinsic score on the unit circle S^1 of the heat kernel (generator d^2/dtheta^2) started at a
/// point mass at angle 0: p_t(theta) ∝ sum_n exp(-(theta + 2 pi n)^2 / (4 t)); returns
/// d/dtheta log p_t times the unit tangent (-sin theta, cos theta).
pub struct CircleHeatScore;

impl Score for CircleHeatScore {
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let kind = x.kind();
        let theta = x.select(1, 1).atan2(&x.select(1, 0)); // [B]
        let n = Tensor::arange_start(-10, 11, (kind, x.device())) * (2.0 * PI); // [K]
        let u = theta.unsqueeze(1) + n.unsqueeze(0); // [B, K]
        let two_t = t.unsqueeze(1) * 2.0;
        let w = (-u.square() / (&two_t * 2.0)).softmax(1, kind);
        let dlogp = (w * (-u / two_t)).sum_dim_intlist([1i64].as_slice(), false, kind); // [B]
        let tangent = Tensor::stack(&[-theta.sin(), theta.cos()], 1);
        tangent * dlogp.unsqueeze(1)
    }
}

/// Per-coordinate sample means and the per-coordinate (unbiased) variances, averaged over coordinates.
pub fn mean_and_var(x: &Tensor) -> (Vec<f64>, f64) {
    let x = x.to_kind(Kind::Double);
    let mean = Vec::<f64>::try_from(x.mean_dim([0i64].as_slice(), false, Kind::Double)).unwrap();
    let var = x.var_dim([0i64].as_slice(), true, false).mean(Kind::Double).double_value(&[]);
    (mean, var)
}

/// Largest absolute coordinate error of the mean and relative error of the variance against N(m, s0^2 I).
pub fn errors(x: &Tensor, m: &[f64], s0: f64) -> (f64, f64) {
    let (mean, var) = mean_and_var(x);
    let mean_err = mean.iter().zip(m).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    (mean_err, (var / (s0 * s0) - 1.0).abs())
}

/// The two schedules every test runs on.
pub fn schedules() -> [Schedule; 2] {
    [Schedule::ve(0.01, 50.0).unwrap(), Schedule::vp(0.1, 20.0).unwrap()]
}

/// The data law of the tests: N(M, S0^2 I) in R^2.
pub const M: [f64; 2] = [1.0, -0.5];
/// Its standard deviation.
pub const S0: f64 = 0.5;

/// Serialises the tests of one binary: libtorch's default generator is process-global, so tests running
/// in parallel threads would interleave their draws and break seeded reproducibility. Also makes
/// libtorch single-threaded (the tests share few cores). Hold the guard for the whole test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::set_num_threads(1);
    guard
}

/// Seeds libtorch's generator, optionally shifted by the environment variable `SAMPLE_TEST_SEED_OFFSET`
/// (to check that the statistical tolerances hold for other seeds).
pub fn seed(seed: i64) {
    let offset: i64 = std::env::var("SAMPLE_TEST_SEED_OFFSET").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    tch::manual_seed(seed + 1000 * offset);
}
