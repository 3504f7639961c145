//! Nonlinear denoising score matching (NDSM, MATH.md section 7): the forward SDE with the score of a fitted
//! Gaussian mixture `pi` as drift, one-step Euler-Maruyama transitions, the NDSM loss with exact and neural
//! control variates, a DSM reference on the matching linear process, the variance of every estimator at
//! fixed parameters, a training loop and the reverse sampler started from `pi`.
//!
//! # The process
//!
//! `dX = beta(t) grad log pi(X) dt + sqrt(2 beta(t)) dW` on `t in [0, 1]`, `beta(t) = beta_min + t (beta_max -
//! beta_min)`. `pi` is stationary, so the reverse process starts from `pi`. The grid has `n_steps` steps of
//! length `h = 1 / n_steps`, `t_n = n h`; step `n` is
//! `X_{n+1} = mu_n + g_n sqrt(h) z`, `mu_n = X_n + beta(t_n) h s_pi(X_n)`, `g_n = sqrt(2 beta(t_n))`,
//! `z ~ N(0, I)` independent of `X_n`.
//! Stability of the explicit step needs `beta_max h` well below `2 / lambda_max(Sigma_k^{-1})` for every
//! component.
//!
//! # The loss
//!
//! With `ns = g_n sqrt(h)` and `s = s_theta(X_{n+1}, t_{n+1})`, the per-sample NDSM loss is
//! `lambda(t_{n+1}) | s + z / ns |^2` (its minimiser is the score of the law of `X_{n+1}`). Expanded,
//! `|s + z/ns|^2 = |s|^2 + 2 s.z/ns + |z|^2/ns^2`: the last two terms carry the variance that explodes as
//! `h -> 0`. Control variates subtract zero-mean terms (the loss stays unbiased):
//!
//! - exact ([`ControlVariate::Exact`]): `2 s_theta(mu_n, t_{n+1}).z/ns + (|z|^2 - D)/ns^2`, both with the
//!   *fixed* coefficient 1 (the coefficient that cancels the `1/h` and `1/sqrt(h)` parts exactly; an
//!   estimated "optimal" coefficient would bias the loss). Both are zero-mean because `mu_n` and `t` are
//!   functions of `X_n`, and `z` is centred, isotropic and independent of `X_n`. The loss is then computed
//!   as `|s|^2 + 2 (s - s_theta(mu_n)).z/ns + D/ns^2` (no cancellation of large terms).
//!   What they leave is `2 (s(mu_n + ns z) - s(mu_n)).z/ns ~ 2 z^T (grad s) z`, so they pay off when one
//!   step's noise is narrower than the structure of the score, `ns^2 |grad s| < 1` (fine grids, where the
//!   plain loss's variance explodes); on coarse grids (`2 beta h lambda_max(Sigma_k^{-1})` near 1) they can
//!   raise the per-sample variance (measured in the tests: ratio 1.09 at h = 1/50, 0.16 at h = 1/200).
//! - neural ([`ControlVariate::Neural`], [`cv::NeuralCv`]): `2 a.z/ns + (|z|^2 - D)/ns^2` with a learned
//!   `a = c_phi(mu_n, t_{n+1})` ([`cv::NeuralCvForm::Standalone`]) or `a = s_theta(mu_n, t_{n+1}) + c_phi(mu_n,
//!   t_{n+1})` ([`cv::NeuralCvForm::OnExact`]); zero-mean for every `phi` by the same argument, and `phi` is
//!   trained to minimise the second moment (so the variance) of the controlled loss.
//!
//! The weight `lambda(t)` is 1 or `sigma(t)^2` ([`NdsmWeighting`]), with `alpha(t) = exp(-B(t))`,
//! `sigma(t)^2 = 1 - exp(-2 B(t))`, `B(t) = int_0^t beta`: the exact noise scales of the process when
//! `pi = N(0, I)` (an Ornstein-Uhlenbeck process), used to condition the network ([`NdsmScoreNet`]) and by
//! the DSM reference ([`dsm_per_sample_loss`]).
//!
//! # Reverse sampler
//!
//! [`reverse_sample`]: `dX = [b - g^2 s_theta] dt + g dW_bar` backwards from `t = 1` with `X_1 ~ pi`:
//! `X <- X + h (-beta s_pi(X) + 2 beta s_theta(X, t)) + sqrt(2 beta h) z` at `t = t_N, .., t_1`.
//!
//! # Randomness
//!
//! Everything draws from a caller's `rand::Rng` (ChaCha8 in this crate); libtorch's generator is never used.
//!
//! ```
//! use nalgebra::{DMatrix, DVector};
//! use rand::SeedableRng;
//! use scores::gmm::GaussianMixture;
//! use tch::{Device, Kind};
//! use train::ndsm::{ndsm_per_sample_loss, ControlVariate, NdsmConfig, NdsmSde, NdsmWeighting};
//!
//! let pi = GaussianMixture::new(vec![1.0], vec![DVector::zeros(2)], vec![DMatrix::identity(2, 2)]).unwrap();
//! let sde = NdsmSde::new(&NdsmConfig::default()).unwrap();
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let data = pi.sample_t(64, &mut rng, Kind::Double, Device::Cpu);
//! let tr = sde.sample_transitions(&pi, &data, 32, &mut rng);
//! let score = |x: &tch::Tensor, _t: &tch::Tensor| pi.score_t(x);
//! let loss = ndsm_per_sample_loss(&score, &sde, &tr, NdsmWeighting::SigmaSquared, ControlVariate::Exact);
//! assert_eq!(loss.size(), [32]);
//! ```

pub mod cv;
pub mod trainer;
pub mod variance;

use crate::{MlpConfig, Result, ScoreMlp, TrainError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use scores::gmm::GaussianMixture;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

pub use cv::{NeuralCv, NeuralCvConfig, NeuralCvForm};
pub use trainer::{
    NdsmCvChoice, NdsmParts, NdsmStepReport, NdsmTrainConfig, NdsmTrainer, CV_ADAM_M_PREFIX, CV_ADAM_V_PREFIX,
    CV_PARAMS_PREFIX,
};
pub use variance::{estimator_variance, Estimator, EstimatorVariance, VarianceConfig};

/// A time-dependent score `(x [B, D], t [B]) -> [B, D]` (same dtype and device as `x`).
pub type ScoreFn<'a> = dyn Fn(&Tensor, &Tensor) -> Tensor + 'a;

/// Parameters of the forward SDE and its Euler-Maruyama grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdsmConfig {
    /// beta at t = 0 (finite, > 0).
    pub beta_min: f64,
    /// beta at t = 1 (finite, >= beta_min).
    pub beta_max: f64,
    /// Euler-Maruyama steps on [0, 1] (1 ..= 100000); `h = 1 / n_steps`.
    pub n_steps: i64,
}

impl Default for NdsmConfig {
    /// beta from 0.1 to 10, 100 steps.
    fn default() -> Self {
        NdsmConfig { beta_min: 0.1, beta_max: 10.0, n_steps: 100 }
    }
}

impl NdsmConfig {
    /// Validates the fields; errors name the field (as `sde.<field>`) and the allowed range.
    pub fn check(self) -> Result<Self> {
        if !(self.beta_min.is_finite() && self.beta_min > 0.0) {
            return Err(TrainError::invalid("sde.beta_min", self.beta_min, "a finite number > 0"));
        }
        if !(self.beta_max.is_finite() && self.beta_max >= self.beta_min) {
            return Err(TrainError::invalid("sde.beta_max", self.beta_max, "a finite number >= sde.beta_min"));
        }
        if !(1..=100_000).contains(&self.n_steps) {
            return Err(TrainError::invalid("sde.n_steps", self.n_steps, ">= 1 and <= 100000"));
        }
        Ok(self)
    }
}

/// The forward SDE `dX = beta(t) grad log pi(X) dt + sqrt(2 beta(t)) dW` on its grid (module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NdsmSde {
    config: NdsmConfig,
}

/// One-step transitions `X_n -> X_{n+1}` of a batch of paths, each row at its own step `n`.
///
/// Tensors are `[B, D]` (points) or `[B]` (per row), in the dtype and on the device of the starting points.
#[derive(Debug)]
pub struct Transitions {
    /// The starting data points `X_0`.
    pub x0: Tensor,
    /// `X_n`.
    pub x_prev: Tensor,
    /// `mu_n = X_n + beta(t_n) h s_pi(X_n)`.
    pub mu: Tensor,
    /// The standard normal `z` of the step.
    pub z: Tensor,
    /// `X_{n+1} = mu_n + noise_scale z`.
    pub x_next: Tensor,
    /// The step index `n` of every row (0-based, `< n_steps`).
    pub step_idx: Vec<i64>,
    /// `t_n`, `[B]`.
    pub t_prev: Tensor,
    /// `t_{n+1}`, `[B]`.
    pub t_next: Tensor,
    /// `g_n sqrt(h) = sqrt(2 beta(t_n) h)`, `[B]`.
    pub noise_scale: Tensor,
}

impl Transitions {
    /// The number of rows B.
    pub fn len(&self) -> i64 {
        self.step_idx.len() as i64
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.step_idx.is_empty()
    }

    /// Rows `start .. start + len` (views sharing storage), e.g. to cut one simulated pool into batches.
    pub fn narrow(&self, start: i64, len: i64) -> Transitions {
        let n = |t: &Tensor| t.narrow(0, start, len);
        Transitions {
            x0: n(&self.x0),
            x_prev: n(&self.x_prev),
            mu: n(&self.mu),
            z: n(&self.z),
            x_next: n(&self.x_next),
            step_idx: self.step_idx[start as usize..(start + len) as usize].to_vec(),
            t_prev: n(&self.t_prev),
            t_next: n(&self.t_next),
            noise_scale: n(&self.noise_scale),
        }
    }
}

/// `[b, d]` standard normals drawn in f64 from `rng` (row-major), as a tensor in `kind` on `device`.
pub fn randn<R: Rng + ?Sized>(rng: &mut R, b: i64, d: i64, kind: Kind, device: Device) -> Tensor {
    let v: Vec<f64> = (0..b * d).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_slice(&v).reshape([b, d]).to_kind(kind).to_device(device)
}

fn check_points(name: &str, x: &Tensor, dim: usize) {
    let size = x.size();
    assert!(
        size.len() == 2 && size[1] == dim as i64,
        "ndsm: argument `{name}` has shape {size:?}, expected [B, {dim}]"
    );
}

impl NdsmSde {
    /// The SDE of a validated `config`.
    pub fn new(config: &NdsmConfig) -> Result<Self> {
        Ok(NdsmSde { config: config.check()? })
    }

    /// The configuration.
    pub fn config(&self) -> &NdsmConfig {
        &self.config
    }

    /// The number of grid steps N.
    pub fn n_steps(&self) -> i64 {
        self.config.n_steps
    }

    /// The step length `h = 1 / N`.
    pub fn h(&self) -> f64 {
        1.0 / self.config.n_steps as f64
    }

    /// The grid time `t_n = n h`.
    pub fn time(&self, step_idx: i64) -> f64 {
        step_idx as f64 * self.h()
    }

    /// `beta(t) = beta_min + t (beta_max - beta_min)`.
    pub fn beta(&self, t: f64) -> f64 {
        self.config.beta_min + t * (self.config.beta_max - self.config.beta_min)
    }

    /// `B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2`.
    pub fn beta_integral(&self, t: f64) -> f64 {
        self.config.beta_min * t + 0.5 * (self.config.beta_max - self.config.beta_min) * t * t
    }

    /// `alpha(t) = exp(-B(t))` (module doc).
    pub fn alpha(&self, t: f64) -> f64 {
        (-self.beta_integral(t)).exp()
    }

    /// `sigma(t) = sqrt(1 - exp(-2 B(t)))` (module doc).
    pub fn sigma(&self, t: f64) -> f64 {
        (-(-2.0 * self.beta_integral(t)).exp_m1()).sqrt()
    }

    /// Batched `(alpha(t), sigma(t))`: `t: [B]` -> two `[B]` tensors of the same dtype and device.
    pub fn alpha_sigma_t(&self, t: &Tensor) -> (Tensor, Tensor) {
        let (bmin, bmax) = (self.config.beta_min, self.config.beta_max);
        let big_b = t * bmin + t.square() * (0.5 * (bmax - bmin));
        let alpha = (-&big_b).exp();
        let sigma = (-(big_b * -2.0).expm1()).sqrt();
        (alpha, sigma)
    }

    /// The drift `beta(t) s_pi(x)`: `x: [B, D]` -> `[B, D]`, same dtype and device.
    pub fn drift(&self, pi: &GaussianMixture, x: &Tensor, t: f64) -> Tensor {
        pi.score_t(x) * self.beta(t)
    }

    /// Simulates every row of `x0: [B, D]` (any float dtype and device) from `t = 0` to its step
    /// `step_idx[b]` (`0 <= n < N`) and returns the transition of that step. Rows are processed in the
    /// order of decreasing step index (stable), and grid step `k` draws `m_k * D` standard normals from `rng`
    /// for the `m_k` rows still moving (row-major in that order). No autograd graph is recorded.
    ///
    /// Panics naming the argument on a shape mismatch or a step index out of range (bugs in the caller).
    pub fn simulate<R: Rng + ?Sized>(
        &self,
        pi: &GaussianMixture,
        x0: &Tensor,
        step_idx: &[i64],
        rng: &mut R,
    ) -> Transitions {
        check_points("x0", x0, pi.dim());
        let (b, d) = (x0.size()[0], x0.size()[1]);
        assert_eq!(step_idx.len() as i64, b, "NdsmSde::simulate: argument `step_idx` needs one index per row of `x0`");
        let n = self.n_steps();
        assert!(
            step_idx.iter().all(|&k| (0..n).contains(&k)),
            "NdsmSde::simulate: argument `step_idx` must lie in 0..{n}"
        );
        let _guard = tch::no_grad_guard();
        let (kind, device) = (x0.kind(), x0.device());
        let h = self.h();
        let mut order: Vec<i64> = (0..b).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(step_idx[i as usize]));
        let mut inverse = vec![0i64; b as usize];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i as usize] = pos as i64;
        }
        // moving[k] = number of rows with step index >= k (a prefix of the sorted rows).
        let max = step_idx.iter().copied().max().unwrap_or(-1);
        let moving = |k: i64| step_idx.iter().filter(|&&s| s >= k).count() as i64;
        let mut x = x0.detach().index_select(0, &Tensor::from_slice(&order).to_device(device));
        let rec: [Tensor; 4] = std::array::from_fn(|_| x0.zeros_like());
        let mut m = b;
        for k in 0..=max {
            let beta = self.beta(self.time(k));
            let z = randn(rng, m, d, kind, device);
            let mu = &x + pi.score_t(&x) * (beta * h);
            let next = &mu + &z * (2.0 * beta * h).sqrt();
            let m_next = moving(k + 1);
            if m_next < m {
                for (r, v) in rec.iter().zip([&x, &mu, &z, &next]) {
                    r.narrow(0, m_next, m - m_next).copy_(&v.narrow(0, m_next, m - m_next));
                }
            }
            x = next.narrow(0, 0, m_next);
            m = m_next;
        }
        let unsort = Tensor::from_slice(&inverse).to_device(device);
        let [x_prev, mu, z, x_next] = rec.map(|r| r.index_select(0, &unsort));
        let t_prev_v: Vec<f64> = step_idx.iter().map(|&k| self.time(k)).collect();
        let ns_v: Vec<f64> = t_prev_v.iter().map(|&t| (2.0 * self.beta(t) * h).sqrt()).collect();
        let to = |v: &[f64]| Tensor::from_slice(v).to_kind(kind).to_device(device);
        let t_prev = to(&t_prev_v);
        let t_next = to(&step_idx.iter().map(|&k| self.time(k + 1)).collect::<Vec<_>>());
        Transitions {
            x0: x0.detach(),
            x_prev,
            mu,
            z,
            x_next,
            step_idx: step_idx.to_vec(),
            t_prev,
            t_next,
            noise_scale: to(&ns_v),
        }
    }

    /// A training batch: `batch_size` rows of `data: [N, D]` drawn uniformly with replacement, each with a
    /// step index uniform on `0..N`, then [`NdsmSde::simulate`]. Draws, in this order, the `batch_size`
    /// row indices, the `batch_size` step indices, then the normals of the simulation.
    pub fn sample_transitions<R: Rng + ?Sized>(
        &self,
        pi: &GaussianMixture,
        data: &Tensor,
        batch_size: i64,
        rng: &mut R,
    ) -> Transitions {
        check_points("data", data, pi.dim());
        let n_rows = data.size()[0];
        assert!(n_rows > 0 && batch_size > 0, "NdsmSde::sample_transitions: empty `data` or `batch_size` < 1");
        let rows: Vec<i64> = (0..batch_size).map(|_| rng.random_range(0..n_rows)).collect();
        let steps: Vec<i64> = (0..batch_size).map(|_| rng.random_range(0..self.n_steps())).collect();
        let x0 = data.index_select(0, &Tensor::from_slice(&rows).to_device(data.device()));
        self.simulate(pi, &x0, &steps, rng)
    }
}

/// The weight `lambda(t_{n+1})` of a transition's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NdsmWeighting {
    /// `lambda = 1`.
    Unit,
    /// `lambda = sigma(t)^2` (module doc): the loss of the noise-scaled output, O(1) at every time.
    SigmaSquared,
}

impl NdsmWeighting {
    /// `lambda(t)`: `t: [B]` -> `[B]`, same dtype and device.
    pub fn weights(self, sde: &NdsmSde, t: &Tensor) -> Tensor {
        match self {
            NdsmWeighting::Unit => t.ones_like(),
            NdsmWeighting::SigmaSquared => sde.alpha_sigma_t(t).1.square(),
        }
    }
}

/// Which zero-mean terms the NDSM loss subtracts (module doc).
#[derive(Debug, Clone, Copy)]
pub enum ControlVariate<'a> {
    /// The plain NDSM loss.
    None,
    /// The two exact terms of MATH.md section 7 with coefficient 1.
    Exact,
    /// A learned linear term plus the exact quadratic term.
    Neural(&'a NeuralCv),
}

fn dot(a: &Tensor, b: &Tensor) -> Tensor {
    (a * b).sum_dim_intlist(-1, false, a.kind())
}

/// The NDSM loss of every transition, `[B]` (module doc): `lambda(t_{n+1}) |s(X_{n+1}, t_{n+1}) + z/ns|^2`
/// minus the zero-mean terms of `cv`, in the dtype and on the device of the transitions; differentiable in
/// whatever `score` depends on. `score(x [B, D], t [B]) -> [B, D]`.
pub fn ndsm_per_sample_loss(
    score: &ScoreFn,
    sde: &NdsmSde,
    tr: &Transitions,
    weighting: NdsmWeighting,
    cv: ControlVariate,
) -> Tensor {
    let ns = tr.noise_scale.unsqueeze(1);
    let zs = &tr.z / &ns;
    let s_next = score(&tr.x_next, &tr.t_next);
    let d = tr.z.size()[1] as f64;
    let kind = tr.z.kind();
    let sq = |v: &Tensor| v.square().sum_dim_intlist(-1, false, kind);
    let raw = match cv {
        ControlVariate::None => sq(&(&s_next + &zs)),
        ControlVariate::Exact => {
            let s_mu = score(&tr.mu, &tr.t_next);
            sq(&s_next) + dot(&(&s_next - s_mu), &zs) * 2.0 + tr.noise_scale.square().reciprocal() * d
        }
        ControlVariate::Neural(ncv) => {
            let a = ncv.linear_term(score, sde, tr);
            sq(&s_next) + dot(&(&s_next - a), &zs) * 2.0 + tr.noise_scale.square().reciprocal() * d
        }
    };
    raw * weighting.weights(sde, &tr.t_next)
}

/// The mean of [`ndsm_per_sample_loss`] over the batch (a scalar tensor).
pub fn ndsm_loss(
    score: &ScoreFn,
    sde: &NdsmSde,
    tr: &Transitions,
    weighting: NdsmWeighting,
    cv: ControlVariate,
) -> Tensor {
    ndsm_per_sample_loss(score, sde, tr, weighting, cv).mean(tr.z.kind())
}

/// The exact control variate of every transition, unweighted, `[B]`:
/// `2 s(mu_n, t_{n+1}).z/ns + (|z|^2 - D)/ns^2` (zero mean; module doc).
pub fn exact_control_variate(score: &ScoreFn, tr: &Transitions) -> Tensor {
    let ns = tr.noise_scale.unsqueeze(1);
    let zs = &tr.z / &ns;
    let d = tr.z.size()[1] as f64;
    dot(&score(&tr.mu, &tr.t_next), &zs) * 2.0
        + (tr.z.square().sum_dim_intlist(-1, false, tr.z.kind()) - d) / ns.squeeze_dim(1).square()
}

/// The DSM loss of the matching linear process (the NDSM process with `pi = N(0, I)`, whose transition law
/// from 0 to `t` is `N(alpha(t) x0, sigma(t)^2 I)`): `lambda(t) |s(x_t, t) + eps / sigma(t)|^2`,
/// `x_t = alpha(t) x0 + sigma(t) eps`, per sample `[B]`.
///
/// `x0, eps: [B, D]`, `t: [B]` (t > 0), one dtype and device.
pub fn dsm_per_sample_loss(
    score: &ScoreFn,
    sde: &NdsmSde,
    x0: &Tensor,
    t: &Tensor,
    eps: &Tensor,
    weighting: NdsmWeighting,
) -> Tensor {
    let (alpha, sigma) = sde.alpha_sigma_t(t);
    let (a, s) = (alpha.unsqueeze(1), sigma.unsqueeze(1));
    let xt = x0 * &a + eps * &s;
    let r = score(&xt, t) + eps / s;
    r.square().sum_dim_intlist(-1, false, x0.kind()) * weighting.weights(sde, t)
}

/// The score network of NDSM: `s_theta(x, t) = net(x, alpha(t), sigma(t)) / sigma(t)` with a [`ScoreMlp`]
/// on points `[D]` (the network's output is the noise-scaled score; its output layer starts at zero, so an
/// untrained model is the zero score).
#[derive(Debug)]
pub struct NdsmScoreNet {
    _vs: Option<nn::VarStore>,
    net: ScoreMlp,
}

impl NdsmScoreNet {
    /// A network for points of `dim` coordinates in `kind` on `device`, initialised from
    /// `ChaCha8Rng::seed_from_u64(seed)` ([`ScoreMlp::new`]). Errors name the invalid field.
    pub fn new(config: &MlpConfig, dim: i64, kind: Kind, device: Device, seed: u64) -> Result<Self> {
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let net = ScoreMlp::new(&vs.root(), config, &[dim], &mut rng)?;
        Ok(NdsmScoreNet { _vs: Some(vs), net })
    }

    /// Wraps an existing network on points `[D]`.
    pub fn from_mlp(net: ScoreMlp) -> Result<Self> {
        if net.point_shape().len() != 1 {
            return Err(TrainError::invalid("point_shape", format!("{:?}", net.point_shape()), "[D] (flat points)"));
        }
        Ok(NdsmScoreNet { _vs: None, net })
    }

    /// The network.
    pub fn mlp(&self) -> &ScoreMlp {
        &self.net
    }

    /// The parameter tensors (shallow handles, `requires_grad`), input layer first.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.net.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// `s_theta(x, t)`: `x: [B, D]`, `t: [B]` (t > 0) in the parameters' dtype and device -> `[B, D]`;
    /// differentiable.
    pub fn score(&self, sde: &NdsmSde, x: &Tensor, t: &Tensor) -> Tensor {
        let (alpha, sigma) = sde.alpha_sigma_t(t);
        self.net.forward(x, &alpha, &sigma) / sigma.unsqueeze(1)
    }
}

/// Samples `n` points by the reverse SDE from `X_1 ~ pi` (module doc), Euler-Maruyama on the forward grid
/// (noise on every step, including the last), under `no_grad`. The result is `[n, D]` in `kind` on
/// `device`; draws the `n` initial points from `rng` ([`GaussianMixture::sample`]), then `n * D` normals
/// per step.
pub fn reverse_sample<R: Rng + ?Sized>(
    score: &ScoreFn,
    sde: &NdsmSde,
    pi: &GaussianMixture,
    n: i64,
    rng: &mut R,
    kind: Kind,
    device: Device,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let h = sde.h();
    let d = pi.dim() as i64;
    let mut x = pi.sample_t(n as usize, rng, kind, device);
    for k in (1..=sde.n_steps()).rev() {
        let t = sde.time(k);
        let beta = sde.beta(t);
        let tt = Tensor::full([n], t, (kind, device));
        let drift = pi.score_t(&x) * (-beta) + score(&x, &tt) * (2.0 * beta);
        let z = randn(rng, n, d, kind, device);
        x = &x + drift * h + z * (2.0 * beta * h).sqrt();
    }
    x
}

#[cfg(test)]
mod tests;
