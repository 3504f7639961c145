//! Time grids for the fixed-step solvers, from the start time down to the end time.
//!
//! A grid of `n_steps` steps has `n_steps + 1` strictly decreasing times, the first exactly the start time
//! and the last exactly the end time. The grids are defined through the noise level
//!
//!   sigma~_t = sigma_t / alpha_t,
//!
//! the noise-to-signal ratio: the sigma of the equivalent VE process x_t / alpha_t = x_0 + sigma~_t eps
//! (Karras et al. 2022). For VE, sigma~_t = sigma_t; for VP it runs from about 1 / alpha_1 (150 for
//! beta in [0.1, 20]) down to sigma_{t_end}, whereas sigma_t itself saturates at 1 near t = 1 and would
//! leave the large-t region with almost no steps. Three spacings are offered ([`TimeGrid`]):
//! - `uniform_t`: uniform in t;
//! - `log_sigma`: uniform in log sigma~_t (minus half the log signal-to-noise ratio). For VE, whose log
//!   sigma_t is affine in t, this is the uniform grid; for VP it puts more steps at small t;
//! - `karras`: sigma~_i^(1/rho) uniform in i (Karras et al. 2022, rho = 7 in their experiments), which
//!   concentrates steps at small noise levels.
//!
//! For the intrinsic (heat) time of a geodesic random walk the noise level is the standard deviation
//! sqrt(2 t) of the heat kernel with generator the Laplace-Beltrami operator, so `log_sigma` is uniform in
//! log t.

use crate::error::check;
use crate::{Result, SampleError};
use scores::Schedule;
use serde::{Deserialize, Serialize};

/// The spacing of a fixed-step time grid (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TimeGrid {
    /// Uniform in t.
    #[default]
    UniformT,
    /// Uniform in log (sigma_t / alpha_t).
    LogSigma,
    /// (sigma_t / alpha_t)^(1/rho) uniform in i.
    Karras {
        /// The exponent rho (> 0).
        rho: f64,
    },
}

impl TimeGrid {
    /// Validates the grid's parameters; errors name the field (`rho`) and the allowed range.
    pub fn check(self) -> Result<Self> {
        if let TimeGrid::Karras { rho } = self {
            check::positive("rho", rho)?;
        }
        Ok(self)
    }

    /// The grid mapped through a noise level sigma(t) and its inverse, from `t_start` down to `t_end`.
    fn build(
        self,
        n_steps: usize,
        t_start: f64,
        t_end: f64,
        sigma: impl Fn(f64) -> f64,
        t_of_sigma: impl Fn(f64) -> Result<f64>,
    ) -> Result<Vec<f64>> {
        self.check()?;
        check::positive_count("n_steps", n_steps)?;
        let n = n_steps as f64;
        let mut ts = Vec::with_capacity(n_steps + 1);
        for i in 0..=n_steps {
            let u = i as f64 / n;
            let t = if i == 0 {
                t_start
            } else if i == n_steps {
                t_end
            } else {
                match self {
                    TimeGrid::UniformT => t_start + u * (t_end - t_start),
                    TimeGrid::LogSigma => {
                        let (a, b) = (sigma(t_start).ln(), sigma(t_end).ln());
                        t_of_sigma((a + u * (b - a)).exp())?
                    }
                    TimeGrid::Karras { rho } => {
                        let (a, b) = (sigma(t_start).powf(1.0 / rho), sigma(t_end).powf(1.0 / rho));
                        t_of_sigma((a + u * (b - a)).powf(rho))?
                    }
                }
            };
            ts.push(t.clamp(t_end, t_start));
        }
        Ok(ts)
    }
}

/// The noise-to-signal ratio sigma_t / alpha_t of `schedule` (the grids' noise level).
pub fn noise_to_signal(schedule: &Schedule, t: f64) -> f64 {
    schedule.sigma(t) / schedule.alpha(t)
}

/// The time at which `noise_to_signal(schedule, t) = ratio` (`ratio` > 0 reached for t in [0, 1]).
pub fn t_of_noise_to_signal(schedule: &Schedule, ratio: f64) -> Result<f64> {
    let sigma = match schedule {
        Schedule::Ve { .. } => ratio,
        // sigma / sqrt(1 - sigma^2) = ratio.
        Schedule::Vp { .. } => ratio / (1.0 + ratio * ratio).sqrt(),
    };
    Ok(schedule.t_of_sigma(sigma)?)
}

/// The `n_steps + 1` decreasing times of a reverse-time grid for `schedule`, from 1 down to `t_end`.
///
/// Errors naming `n_steps` (>= 1), `t_end` (in (0, 1)) or `rho` (> 0).
pub fn time_grid(schedule: &Schedule, grid: TimeGrid, n_steps: usize, t_end: f64) -> Result<Vec<f64>> {
    check::t_end("t_end", t_end)?;
    grid.build(n_steps, 1.0, t_end, |t| noise_to_signal(schedule, t), |r| t_of_noise_to_signal(schedule, r))
}

/// The `n_steps + 1` decreasing heat times of a grid from `t_start` down to `t_end`, for an intrinsic
/// process with generator the Laplace-Beltrami operator (sigma = sqrt(2 t)).
///
/// Errors naming `n_steps` (>= 1), `t_end` (> 0), `t_start` (> t_end) or `rho` (> 0).
pub fn heat_time_grid(grid: TimeGrid, n_steps: usize, t_start: f64, t_end: f64) -> Result<Vec<f64>> {
    check::positive("t_end", t_end)?;
    if !(t_start.is_finite() && t_start > t_end) {
        return Err(SampleError::invalid("t_start", t_start, "a finite number > t_end"));
    }
    grid.build(n_steps, t_start, t_end, |t| (2.0 * t).sqrt(), |s| Ok(0.5 * s * s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_decreasing_and_hit_both_ends() {
        let schedules = [Schedule::ve(0.01, 10.0).unwrap(), Schedule::vp(0.1, 20.0).unwrap()];
        for s in schedules {
            for g in [TimeGrid::UniformT, TimeGrid::LogSigma, TimeGrid::Karras { rho: 7.0 }] {
                let ts = time_grid(&s, g, 17, 1e-3).unwrap();
                assert_eq!(ts.len(), 18);
                assert_eq!(ts[0], 1.0);
                assert_eq!(ts[17], 1e-3);
                assert!(ts.windows(2).all(|w| w[1] < w[0]), "{s:?} {g:?} {ts:?}");
            }
        }
        let ts = heat_time_grid(TimeGrid::LogSigma, 4, 1.0, 1e-4).unwrap();
        for (i, t) in ts.iter().enumerate() {
            assert!((t.log10() + i as f64).abs() < 1e-12, "{ts:?}");
        }
    }

    #[test]
    fn log_sigma_is_uniform_in_the_log_noise_to_signal_ratio() {
        let s = Schedule::vp(0.1, 20.0).unwrap();
        let ts = time_grid(&s, TimeGrid::LogSigma, 8, 1e-3).unwrap();
        let logs: Vec<f64> = ts.iter().map(|&t| noise_to_signal(&s, t).ln()).collect();
        let step = (logs[8] - logs[0]) / 8.0;
        for i in 0..8 {
            assert!((logs[i + 1] - logs[i] - step).abs() < 1e-9, "{logs:?}");
        }
        for &t in &[1e-3, 0.3, 1.0] {
            assert!((t_of_noise_to_signal(&s, noise_to_signal(&s, t)).unwrap() - t).abs() < 1e-9);
        }
    }

    #[test]
    fn log_sigma_is_uniform_for_ve() {
        let s = Schedule::ve(0.01, 10.0).unwrap();
        let a = time_grid(&s, TimeGrid::UniformT, 10, 0.1).unwrap();
        let b = time_grid(&s, TimeGrid::LogSigma, 10, 0.1).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn invalid_grids_name_the_field() {
        let s = Schedule::vp(0.1, 20.0).unwrap();
        let e = time_grid(&s, TimeGrid::UniformT, 0, 0.1).unwrap_err().to_string();
        assert!(e.contains("n_steps"), "{e}");
        let e = time_grid(&s, TimeGrid::UniformT, 3, 1.0).unwrap_err().to_string();
        assert!(e.contains("t_end"), "{e}");
        let e = time_grid(&s, TimeGrid::Karras { rho: -1.0 }, 3, 0.1).unwrap_err().to_string();
        assert!(e.contains("rho"), "{e}");
        let e = heat_time_grid(TimeGrid::UniformT, 3, 0.1, 0.2).unwrap_err().to_string();
        assert!(e.contains("t_start"), "{e}");
    }
}
