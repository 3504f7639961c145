//! The adaptive Dormand-Prince 5(4) Runge-Kutta method (Dormand and Prince 1980; Hairer, Norsett and Wanner,
//! "Solving ODEs I", section II.4-5) for the probability-flow ODE dx/dt = f(t) x - g(t)^2 s(x, t) / 2
//! ([`crate::sde`]), from t = 1 down to t_end.
//!
//! # Error control
//!
//! Each step computes a fifth-order solution y (which is propagated: local extrapolation) and the difference
//! e with the embedded fourth-order one. With sc = atol + rtol max(|x|, |y|) per entry, the error of a
//! sample b is the root mean square of e / sc over its entries, and the step's error is the largest error
//! over the batch, so that every sample meets the tolerance (the batch shares one step size). A step is
//! accepted when its error is at most 1, and a non-finite error counts as a rejection.
//!
//! The next step size is h * fac with fac clamped to [0.2, 10] (to [0.2, 1] right after a rejection):
//! - [`StepController::Standard`]: fac = safety err^(-1/5);
//! - [`StepController::Pi`]: the proportional-integral controller of Gustafsson as in Hairer's DOPRI5,
//!   fac = safety err^(-0.17) err_prev^(0.04), with err_prev the error of the last accepted step
//!   (at least 1e-4); smoother step sequences for the same accuracy.
//!
//! The first step size is `initial_step` if given, otherwise Hairer's heuristic (one extra score
//! evaluation). The method is first-same-as-last: an accepted step costs 6 score evaluations, a rejected
//! one 6 as well, the first step 7. The solver is deterministic: the same initial state gives the same
//! samples, bit for bit, on the same machine.

use crate::error::check;
use crate::sde::{finish, probability_flow_drift, FinalDenoise, SampleOutput};
use crate::tensor_util::{check_state, ensure_finite};
use crate::{Progress, Result, SampleError};
use scores::{Schedule, Score};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The step-size controller of [`dormand_prince()`] (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StepController {
    /// fac = safety err^(-1/5).
    #[default]
    Standard,
    /// fac = safety err^(-0.17) err_prev^(0.04).
    Pi,
}

/// The configuration of [`dormand_prince()`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DormandPrinceConfig {
    /// The end time, in the open interval (0, 1).
    pub t_end: f64,
    /// Relative tolerance (> 0).
    pub rtol: f64,
    /// Absolute tolerance (> 0).
    pub atol: f64,
    /// The budget of steps, accepted plus rejected (>= 1); exceeding it is an error.
    pub max_steps: usize,
    /// The magnitude of the first step (in (0, 1 - t_end]); `None` (the default) picks it automatically.
    #[serde(default)]
    pub initial_step: Option<f64>,
    /// The safety factor of the step-size update, in (0, 1) (default 0.9).
    #[serde(default = "default_safety")]
    pub safety: f64,
    /// The step-size controller (default: standard).
    #[serde(default)]
    pub controller: StepController,
    /// The last step (default: none).
    #[serde(default)]
    pub final_denoise: FinalDenoise,
}

fn default_safety() -> f64 {
    0.9
}

impl Default for DormandPrinceConfig {
    /// t_end = 1e-3, rtol = atol = 1e-5, at most 10 000 steps, automatic first step, safety 0.9, standard
    /// controller, no final denoising.
    fn default() -> Self {
        Self {
            t_end: 1e-3,
            rtol: 1e-5,
            atol: 1e-5,
            max_steps: 10_000,
            initial_step: None,
            safety: default_safety(),
            controller: StepController::Standard,
            final_denoise: FinalDenoise::Off,
        }
    }
}

impl DormandPrinceConfig {
    /// Validates every field; errors name the field (`t_end`, `rtol`, `atol`, `max_steps`,
    /// `initial_step`, `safety`) and the allowed range.
    pub fn check(self) -> Result<Self> {
        check::t_end("t_end", self.t_end)?;
        check::positive("rtol", self.rtol)?;
        check::positive("atol", self.atol)?;
        check::positive_count("max_steps", self.max_steps)?;
        if let Some(h) = self.initial_step {
            if !(h > 0.0 && h <= 1.0 - self.t_end) {
                return Err(SampleError::invalid("initial_step", h, "a number in (0, 1 - t_end]"));
            }
        }
        if !(self.safety > 0.0 && self.safety < 1.0) {
            return Err(SampleError::invalid("safety", self.safety, "a number in the open interval (0, 1)"));
        }
        Ok(self)
    }
}

// The Dormand-Prince 5(4) tableau.
const C: [f64; 7] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
const A2: [f64; 1] = [1.0 / 5.0];
const A3: [f64; 2] = [3.0 / 40.0, 9.0 / 40.0];
const A4: [f64; 3] = [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0];
const A5: [f64; 4] = [19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0];
const A6: [f64; 5] = [9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0];
/// Fifth-order weights (also the seventh stage's row: first same as last).
const B5: [f64; 7] = [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0, 0.0];
/// Embedded fourth-order weights.
const B4: [f64; 7] =
    [5179.0 / 57600.0, 0.0, 7571.0 / 16695.0, 393.0 / 640.0, -92097.0 / 339200.0, 187.0 / 2100.0, 1.0 / 40.0];

const FAC_MIN: f64 = 0.2;
const FAC_MAX: f64 = 10.0;
const PI_BETA: f64 = 0.04;
const PI_ALPHA: f64 = 0.2 - 0.75 * PI_BETA;

/// x + h sum_j a_j k_j, out of place (an in-place `+=` would write into `x`'s storage).
fn combine(x: &Tensor, h: f64, a: &[f64], k: &[Tensor]) -> Tensor {
    a.iter().zip(k).filter(|(aj, _)| **aj != 0.0).fold(x.shallow_clone(), |acc, (aj, kj)| acc + kj * (h * aj))
}

/// The largest per-sample root-mean-square of `v / sc` over the batch, as f64 (NaN if any entry is NaN).
fn batch_norm(v: &Tensor, sc: &Tensor) -> f64 {
    let r = (v / sc).square().flatten(1, -1).mean_dim([1i64].as_slice(), false, None).sqrt();
    let m = r.max().double_value(&[]);
    if r.isnan().any().int64_value(&[]) != 0 {
        f64::NAN
    } else {
        m
    }
}

/// Integrates the probability-flow ODE from t = 1 down to `config.t_end` with the adaptive Dormand-Prince
/// 5(4) method of the module doc.
///
/// `x_init: [B, ..ambient]` (any float dtype, any device; see [`crate::initial_noise`]) is the state at
/// t = 1; the samples have the same shape, dtype and device. The output counts the score evaluations and
/// the accepted and rejected steps. Each accepted step is reported to `progress` as
/// `on_step(accepted_idx, max_steps)`.
///
/// Errors: an invalid `config` (naming the field), a non-floating or non-finite `x_init`,
/// [`SampleError::MaxStepsExceeded`] when the budget runs out, [`SampleError::StepSizeUnderflow`] when the
/// step size collapses, and non-finite samples.
pub fn dormand_prince<S: Score + ?Sized, P: Progress + ?Sized>(
    score: &S,
    schedule: &Schedule,
    x_init: &Tensor,
    config: &DormandPrinceConfig,
    progress: &mut P,
) -> Result<SampleOutput> {
    let config = config.check()?;
    check_state("x_init", x_init)?;
    let t_end = config.t_end;
    let f = |x: &Tensor, t: f64| probability_flow_drift(score, schedule, x, t).detach();

    let mut t = 1.0f64;
    let mut x = x_init.detach();
    let mut k1 = f(&x, t);
    let mut n_evals = 1usize;

    // Step magnitude; steps go from t to t - h.
    let mut h = match config.initial_step {
        Some(h) => h,
        None => {
            let sc = x.abs() * config.rtol + config.atol;
            let d0 = batch_norm(&x, &sc);
            let d1 = batch_norm(&k1, &sc);
            let h0 = if !(d0 >= 1e-5 && d1 >= 1e-5) { 1e-6 } else { 0.01 * d0 / d1 };
            let h0 = h0.min(t - t_end);
            let k_probe = f(&(&x - &k1 * h0), t - h0);
            n_evals += 1;
            let d2 = batch_norm(&(k_probe - &k1), &sc) / h0;
            let dmax = d1.max(d2);
            let h1 = if dmax.is_finite() && dmax > 1e-15 { (0.01 / dmax).powf(0.2) } else { (h0 * 1e-3).max(1e-6) };
            (100.0 * h0).min(h1).min(t - t_end)
        }
    };

    let (mut n_accepted, mut n_rejected) = (0usize, 0usize);
    let mut err_prev = 1e-4f64;
    let mut after_rejection = false;
    while t > t_end {
        if n_accepted + n_rejected >= config.max_steps {
            return Err(SampleError::MaxStepsExceeded { max_steps: config.max_steps, t, t_end });
        }
        let remaining = t - t_end;
        let last = h >= remaining * (1.0 - 1e-10);
        if last {
            h = remaining;
        } else if h <= 16.0 * f64::EPSILON * t {
            return Err(SampleError::StepSizeUnderflow { h, t });
        }
        let hs = -h;
        let mut k: Vec<Tensor> = vec![k1.shallow_clone()];
        for (i, a) in [&A2[..], &A3[..], &A4[..], &A5[..], &A6[..]].into_iter().enumerate() {
            let xi = combine(&x, hs, a, &k);
            k.push(f(&xi, t + C[i + 1] * hs));
        }
        let y = combine(&x, hs, &B5[..6], &k);
        k.push(f(&y, t + hs));
        n_evals += 6;
        let e: Vec<f64> = B5.iter().zip(&B4).map(|(b5, b4)| b5 - b4).collect();
        let err_vec = combine(&x.zeros_like(), hs, &e, &k);
        let sc = x.abs().maximum(&y.abs()) * config.rtol + config.atol;
        let err = batch_norm(&err_vec, &sc);

        if err.is_finite() && err <= 1.0 {
            t = if last { t_end } else { t + hs };
            x = y;
            k1 = k.pop().expect("seven stages");
            progress.on_step(n_accepted, config.max_steps);
            n_accepted += 1;
            let fac = match config.controller {
                StepController::Standard => config.safety * err.powf(-0.2),
                StepController::Pi => config.safety * err.powf(-PI_ALPHA) * err_prev.powf(PI_BETA),
            };
            let fac_max = if after_rejection { 1.0 } else { FAC_MAX };
            h *= if fac.is_nan() { fac_max } else { fac.clamp(FAC_MIN, fac_max) };
            err_prev = err.max(1e-4);
            after_rejection = false;
        } else {
            n_rejected += 1;
            let fac = if err.is_finite() { (config.safety * err.powf(-0.2)).clamp(FAC_MIN, 1.0) } else { FAC_MIN };
            h *= fac;
            after_rejection = true;
        }
    }
    let (x, extra) = finish(score, schedule, x, t_end, config.final_denoise);
    ensure_finite(|| "dormand_prince samples".to_string(), &x)?;
    Ok(SampleOutput { x, n_score_evals: n_evals + extra, n_steps: n_accepted, n_rejected })
}
