//! Noise schedules (MATH.md section 0): x_t = alpha_t x_0 + sigma_t eps, eps ~ N(0, I), for t in [0, 1].
//!
//! - VE: alpha_t = 1, sigma_t = sigma_min (sigma_max / sigma_min)^t; SDE dx = g(t) dW with
//!   g(t)^2 = d sigma_t^2 / dt = 2 sigma_t^2 ln(sigma_max / sigma_min); drift coefficient 0.
//! - VP: beta(t) = beta_min + t (beta_max - beta_min), B(t) = int_0^t beta, alpha_t = exp(-B(t) / 2),
//!   sigma_t^2 = 1 - alpha_t^2; SDE dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW.
//!
//! The forward SDE is always dx = f(t) x dt + g(t) dW with a scalar `f` ([`Schedule::drift_coef`]).

use crate::{Result, ScoreError};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// A noise schedule, shared by training (losses) and sampling (reverse SDEs and ODEs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Variance exploding.
    Ve {
        /// sigma at t = 0 (> 0).
        sigma_min: f64,
        /// sigma at t = 1 (> sigma_min).
        sigma_max: f64,
    },
    /// Variance preserving with a linear beta.
    Vp {
        /// beta at t = 0 (>= 0).
        beta_min: f64,
        /// beta at t = 1 (> beta_min).
        beta_max: f64,
    },
}

impl Schedule {
    /// A VE schedule, validated.
    pub fn ve(sigma_min: f64, sigma_max: f64) -> Result<Self> {
        Schedule::Ve { sigma_min, sigma_max }.check()
    }

    /// A VP schedule, validated.
    pub fn vp(beta_min: f64, beta_max: f64) -> Result<Self> {
        Schedule::Vp { beta_min, beta_max }.check()
    }

    /// Validates the parameters; errors name the field and the allowed range.
    pub fn check(self) -> Result<Self> {
        match self {
            Schedule::Ve { sigma_min, sigma_max } => {
                if !(sigma_min.is_finite() && sigma_min > 0.0) {
                    return Err(ScoreError::invalid("sigma_min", sigma_min, "a finite number > 0"));
                }
                if !(sigma_max.is_finite() && sigma_max > sigma_min) {
                    return Err(ScoreError::invalid("sigma_max", sigma_max, "a finite number > sigma_min"));
                }
            }
            Schedule::Vp { beta_min, beta_max } => {
                if !(beta_min.is_finite() && beta_min >= 0.0) {
                    return Err(ScoreError::invalid("beta_min", beta_min, "a finite number >= 0"));
                }
                if !(beta_max.is_finite() && beta_max > beta_min) {
                    return Err(ScoreError::invalid("beta_max", beta_max, "a finite number > beta_min"));
                }
            }
        }
        Ok(self)
    }

    /// Errors unless t is in [0, 1] (and finite).
    pub fn check_time(&self, t: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&t) {
            return Err(ScoreError::TimeOutOfRange { t, lo: 0.0, hi: 1.0 });
        }
        Ok(())
    }

    /// int_0^t beta for VP.
    fn beta_integral(beta_min: f64, beta_max: f64, t: f64) -> f64 {
        beta_min * t + 0.5 * t * t * (beta_max - beta_min)
    }

    /// alpha_t.
    pub fn alpha(&self, t: f64) -> f64 {
        match *self {
            Schedule::Ve { .. } => 1.0,
            Schedule::Vp { beta_min, beta_max } => (-0.5 * Self::beta_integral(beta_min, beta_max, t)).exp(),
        }
    }

    /// sigma_t.
    pub fn sigma(&self, t: f64) -> f64 {
        match *self {
            Schedule::Ve { sigma_min, sigma_max } => sigma_min * (sigma_max / sigma_min).powf(t),
            // 1 - exp(-B) computed without cancellation at small B.
            Schedule::Vp { beta_min, beta_max } => (-(-Self::beta_integral(beta_min, beta_max, t)).exp_m1()).sqrt(),
        }
    }

    /// g(t)^2, the squared diffusion coefficient of the forward SDE.
    pub fn g2(&self, t: f64) -> f64 {
        match *self {
            Schedule::Ve { sigma_min, sigma_max } => {
                let s = self.sigma(t);
                2.0 * s * s * (sigma_max / sigma_min).ln()
            }
            Schedule::Vp { beta_min, beta_max } => beta_min + t * (beta_max - beta_min),
        }
    }

    /// The scalar drift coefficient f(t) of the forward SDE dx = f(t) x dt + g(t) dW.
    pub fn drift_coef(&self, t: f64) -> f64 {
        match *self {
            Schedule::Ve { .. } => 0.0,
            Schedule::Vp { .. } => -0.5 * self.g2(t),
        }
    }

    /// The time at which sigma_t = sigma (the inverse of [`Schedule::sigma`]); errors outside the range.
    pub fn t_of_sigma(&self, sigma: f64) -> Result<f64> {
        let t = match *self {
            Schedule::Ve { sigma_min, sigma_max } => (sigma / sigma_min).ln() / (sigma_max / sigma_min).ln(),
            Schedule::Vp { beta_min, beta_max } => {
                if !(0.0..1.0).contains(&sigma) {
                    return Err(ScoreError::invalid("sigma", sigma, "a value in [0, 1) for a VP schedule"));
                }
                // B(t) = -ln(1 - sigma^2); solve a t^2 / 2 + b t - B = 0 for t >= 0.
                let big_b = -(-sigma * sigma).ln_1p();
                let a = beta_max - beta_min;
                if a.abs() < 1e-300 {
                    big_b / beta_min
                } else {
                    2.0 * big_b / (beta_min + (beta_min * beta_min + 2.0 * a * big_b).sqrt())
                }
            }
        };
        if !(-1e-12..=1.0 + 1e-12).contains(&t) || !t.is_finite() {
            return Err(ScoreError::invalid("sigma", sigma, "a value reached by the schedule for t in [0, 1]"));
        }
        Ok(t.clamp(0.0, 1.0))
    }

    /// The time at which alpha_t = alpha (VP only; VE has alpha = 1 for every t and errors).
    pub fn t_of_alpha(&self, alpha: f64) -> Result<f64> {
        match *self {
            Schedule::Ve { .. } => Err(ScoreError::invalid("alpha", alpha, "a VP schedule (VE has alpha = 1)")),
            Schedule::Vp { .. } => {
                if !(alpha > 0.0 && alpha <= 1.0) {
                    return Err(ScoreError::invalid("alpha", alpha, "a value in (0, 1]"));
                }
                self.t_of_sigma((1.0 - alpha * alpha).max(0.0).sqrt())
            }
        }
    }

    /// Batched alpha_t: `t: [B]` -> `[B]`, same dtype and device.
    pub fn alpha_t(&self, t: &Tensor) -> Tensor {
        match *self {
            Schedule::Ve { .. } => t.ones_like(),
            Schedule::Vp { beta_min, beta_max } => (self.vp_integral_t(t, beta_min, beta_max) * -0.5).exp(),
        }
    }

    /// Batched sigma_t: `t: [B]` -> `[B]`, same dtype and device.
    pub fn sigma_t(&self, t: &Tensor) -> Tensor {
        match *self {
            Schedule::Ve { sigma_min, sigma_max } => (t * (sigma_max / sigma_min).ln()).exp() * sigma_min,
            Schedule::Vp { beta_min, beta_max } => (-(self.vp_integral_t(t, beta_min, beta_max) * -1.0).expm1()).sqrt(),
        }
    }

    /// Batched g(t)^2: `t: [B]` -> `[B]`, same dtype and device.
    pub fn g2_t(&self, t: &Tensor) -> Tensor {
        match *self {
            Schedule::Ve { sigma_min, sigma_max } => self.sigma_t(t).square() * (2.0 * (sigma_max / sigma_min).ln()),
            Schedule::Vp { beta_min, beta_max } => t * (beta_max - beta_min) + beta_min,
        }
    }

    /// Batched drift coefficient f(t): `t: [B]` -> `[B]`, same dtype and device.
    pub fn drift_coef_t(&self, t: &Tensor) -> Tensor {
        match *self {
            Schedule::Ve { .. } => t.zeros_like(),
            Schedule::Vp { .. } => self.g2_t(t) * -0.5,
        }
    }

    fn vp_integral_t(&self, t: &Tensor, beta_min: f64, beta_max: f64) -> Tensor {
        t * beta_min + t.square() * (0.5 * (beta_max - beta_min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn schedules() -> [Schedule; 2] {
        [Schedule::ve(0.01, 50.0).unwrap(), Schedule::vp(0.1, 20.0).unwrap()]
    }

    #[test]
    fn g2_is_the_derivative_of_the_variance() {
        // For dx = f x dt + g dW, d sigma^2/dt = 2 f sigma^2 + g^2 (sigma relative to alpha-scaled data).
        for s in schedules() {
            for &t in &[0.05, 0.3, 0.7, 0.95] {
                let h = 1e-6;
                let var = |t: f64| s.sigma(t).powi(2);
                let dvar = (var(t + h) - var(t - h)) / (2.0 * h);
                let expect = 2.0 * s.drift_coef(t) * var(t) + s.g2(t);
                assert!((dvar - expect).abs() <= 1e-6 * expect.abs().max(1.0), "{s:?} t={t}: {dvar} vs {expect}");
                let dalpha = (s.alpha(t + h).ln() - s.alpha(t - h).ln()) / (2.0 * h);
                assert!((dalpha - s.drift_coef(t)).abs() < 1e-6, "{s:?} t={t}");
            }
        }
    }

    #[test]
    fn inverses_round_trip() {
        for s in schedules() {
            for &t in &[0.0, 1e-4, 0.2, 0.5, 0.999, 1.0] {
                let back = s.t_of_sigma(s.sigma(t)).unwrap();
                assert!((back - t).abs() < 1e-9, "{s:?} t={t} back={back}");
            }
        }
        let vp = Schedule::vp(0.1, 20.0).unwrap();
        assert!((vp.t_of_alpha(vp.alpha(0.4)).unwrap() - 0.4).abs() < 1e-9);
        assert!(Schedule::ve(0.01, 50.0).unwrap().t_of_alpha(0.5).is_err());
    }

    #[test]
    fn batched_matches_scalar() {
        for s in schedules() {
            let ts = [0.0, 0.1, 0.5, 0.9, 1.0];
            let t = Tensor::from_slice(&ts).to_kind(Kind::Double);
            let (a, sg, g2, f) = (s.alpha_t(&t), s.sigma_t(&t), s.g2_t(&t), s.drift_coef_t(&t));
            for (i, &ti) in ts.iter().enumerate() {
                let i = i as i64;
                assert!((a.double_value(&[i]) - s.alpha(ti)).abs() < 1e-12);
                assert!((sg.double_value(&[i]) - s.sigma(ti)).abs() < 1e-12);
                assert!((g2.double_value(&[i]) - s.g2(ti)).abs() < 1e-9 * s.g2(ti).max(1.0));
                assert!((f.double_value(&[i]) - s.drift_coef(ti)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn invalid_parameters_name_the_field() {
        let e = Schedule::ve(0.0, 1.0).unwrap_err().to_string();
        assert!(e.contains("sigma_min"), "{e}");
        let e = Schedule::ve(1.0, 0.5).unwrap_err().to_string();
        assert!(e.contains("sigma_max"), "{e}");
        let e = Schedule::vp(-1.0, 1.0).unwrap_err().to_string();
        assert!(e.contains("beta_min"), "{e}");
        let e = Schedule::vp(1.0, f64::NAN).unwrap_err().to_string();
        assert!(e.contains("beta_max"), "{e}");
        let s = Schedule::ve(0.01, 1.0).unwrap();
        assert!(s.check_time(1.5).is_err());
        assert!(s.check_time(f64::NAN).is_err());
    }
}
