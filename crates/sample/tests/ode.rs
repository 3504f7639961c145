//! The probability-flow ODE solvers (Heun, adaptive Dormand-Prince) against the exact flow map of a
//! Gaussian data law, for VE and VP.
//!
//! For the data law N(m, s0^2 I) the noised law at t is N(alpha_t m, v_t I), v_t = alpha_t^2 s0^2 + sigma_t^2,
//! and the probability-flow ODE is solved in closed form:
//! x_t = alpha_t m + sqrt(v_t / v_1) (x_1 - alpha_1 m).

mod common;

use common::*;
use sample::*;
use scores::Schedule;
use tch::{Device, Kind, Tensor};

const T_END: f64 = 1e-3;

fn exact_flow(schedule: &Schedule, x1: &Tensor) -> Tensor {
    let m = Tensor::from_slice(&M).to_kind(x1.kind());
    let v = |t: f64| (schedule.alpha(t) * S0).powi(2) + schedule.sigma(t).powi(2);
    (x1 - &m * schedule.alpha(1.0)) * (v(T_END) / v(1.0)).sqrt() + m * schedule.alpha(T_END)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn dopri(rtol: f64) -> DormandPrinceConfig {
    DormandPrinceConfig { t_end: T_END, rtol, atol: rtol, ..Default::default() }
}

fn fixed(n_steps: usize, time_grid: TimeGrid) -> FixedStepConfig {
    FixedStepConfig { n_steps, t_end: T_END, time_grid, ..Default::default() }
}

#[test]
fn heun_and_dormand_prince_recover_the_gaussian_for_ve_and_vp() {
    let _lock = serial();
    for (i, schedule) in schedules().into_iter().enumerate() {
        seed(100 + i as i64);
        let score = MixtureScore::gaussian(schedule, &M, S0);
        let x1 = initial_noise(&schedule, &[4000, 2], Kind::Double, Device::Cpu);
        let heun = heun(&score, &schedule, &x1, &fixed(100, TimeGrid::UniformT), &mut NoProgress).unwrap();
        let dp = dormand_prince(&score, &schedule, &x1, &dopri(1e-5), &mut NoProgress).unwrap();
        for (name, x) in [("heun", &heun.x), ("dormand_prince", &dp.x)] {
            let (mean_err, var_err) = errors(x, &M, S0);
            assert!(mean_err < 0.04 && var_err < 0.1, "{name} {schedule:?}: mean {mean_err}, var {var_err}");
        }
        assert_eq!(heun.n_score_evals, 200);
    }
}

#[test]
fn heun_converges_at_second_order_on_every_grid() {
    let _lock = serial();
    for schedule in schedules() {
        let score = MixtureScore::gaussian(schedule, &M, S0);
        seed(110);
        let x1 = initial_noise(&schedule, &[256, 2], Kind::Double, Device::Cpu);
        let exact = exact_flow(&schedule, &x1);
        for grid in [TimeGrid::UniformT, TimeGrid::LogSigma, TimeGrid::Karras { rho: 7.0 }] {
            let err = |n| {
                let out = heun(&score, &schedule, &x1, &fixed(n, grid), &mut NoProgress).unwrap();
                max_abs_diff(&out.x, &exact)
            };
            let (coarse, fine) = (err(50), err(200));
            // Second order: a factor 16 in theory; ask for 8.
            assert!(fine < coarse / 8.0 && fine < 5e-3, "{schedule:?} {grid:?}: {coarse} -> {fine}");
        }
    }
}

#[test]
fn dormand_prince_converges_as_the_tolerance_decreases() {
    let _lock = serial();
    for schedule in schedules() {
        let score = MixtureScore::gaussian(schedule, &M, S0);
        seed(120);
        let x1 = initial_noise(&schedule, &[256, 2], Kind::Double, Device::Cpu);
        let exact = exact_flow(&schedule, &x1);
        let mut last = (f64::INFINITY, 0usize);
        for rtol in [1e-3, 1e-5, 1e-7, 1e-9] {
            let out = dormand_prince(&score, &schedule, &x1, &dopri(rtol), &mut NoProgress).unwrap();
            let err = max_abs_diff(&out.x, &exact);
            assert!(
                err < last.0 && out.n_score_evals > last.1,
                "{schedule:?} rtol {rtol}: {err} evals {}",
                out.n_score_evals
            );
            assert!(err < 1e3 * rtol, "{schedule:?} rtol {rtol}: error {err}");
            assert_eq!(out.n_score_evals, 1 + 1 + 6 * (out.n_steps + out.n_rejected));
            last = (err, out.n_score_evals);
        }
        // Heun with many steps agrees with the tight Dormand-Prince solution.
        let tight = dormand_prince(&score, &schedule, &x1, &dopri(1e-9), &mut NoProgress).unwrap();
        let heun = heun(&score, &schedule, &x1, &fixed(1000, TimeGrid::LogSigma), &mut NoProgress).unwrap();
        let gap = max_abs_diff(&tight.x, &heun.x);
        assert!(gap < 2e-4, "{schedule:?}: heun vs dormand-prince {gap}");
    }
}

#[test]
fn pi_controller_and_given_first_step_meet_the_tolerance() {
    let _lock = serial();
    for schedule in schedules() {
        let score = MixtureScore::gaussian(schedule, &M, S0);
        seed(130);
        let x1 = initial_noise(&schedule, &[256, 2], Kind::Double, Device::Cpu);
        let exact = exact_flow(&schedule, &x1);
        let config = DormandPrinceConfig { controller: StepController::Pi, initial_step: Some(0.01), ..dopri(1e-6) };
        let out = dormand_prince(&score, &schedule, &x1, &config, &mut NoProgress).unwrap();
        let err = max_abs_diff(&out.x, &exact);
        assert!(err < 1e-3, "{schedule:?}: {err}");
        assert_eq!(out.n_score_evals, 1 + 6 * (out.n_steps + out.n_rejected));
    }
}

#[test]
fn dormand_prince_is_deterministic() {
    let _lock = serial();
    let schedule = Schedule::vp(0.1, 20.0).unwrap();
    let score = MixtureScore::gaussian(schedule, &M, S0);
    seed(140);
    let x1 = initial_noise(&schedule, &[128, 2], Kind::Double, Device::Cpu);
    let a = dormand_prince(&score, &schedule, &x1, &dopri(1e-6), &mut NoProgress).unwrap();
    seed(141);
    let b = dormand_prince(&score, &schedule, &x1, &dopri(1e-6), &mut NoProgress).unwrap();
    assert!(a.x.equal(&b.x));
    assert_eq!((a.n_score_evals, a.n_steps, a.n_rejected), (b.n_score_evals, b.n_steps, b.n_rejected));
}

#[test]
fn dormand_prince_reports_an_exhausted_budget() {
    let _lock = serial();
    let schedule = Schedule::ve(0.01, 50.0).unwrap();
    let score = MixtureScore::gaussian(schedule, &M, S0);
    seed(150);
    let x1 = initial_noise(&schedule, &[16, 2], Kind::Double, Device::Cpu);
    let config = DormandPrinceConfig { max_steps: 3, ..dopri(1e-8) };
    let mut reported = 0;
    let mut observer = |_: usize, n_steps: usize| {
        assert_eq!(n_steps, 3);
        reported += 1;
    };
    let e = dormand_prince(&score, &schedule, &x1, &config, &mut observer).unwrap_err();
    assert!(matches!(e, SampleError::MaxStepsExceeded { max_steps: 3, .. }), "{e}");
    assert!(e.to_string().contains("max_steps"), "{e}");
    assert!(reported <= 3);
}

#[test]
fn a_non_finite_score_is_an_error_not_a_hang() {
    let _lock = serial();
    struct NanScore;
    impl scores::Score for NanScore {
        fn score(&self, x: &Tensor, _t: &Tensor) -> Tensor {
            x * f64::NAN
        }
    }
    let schedule = Schedule::vp(0.1, 20.0).unwrap();
    seed(160);
    let x1 = initial_noise(&schedule, &[4, 2], Kind::Double, Device::Cpu);
    let e = dormand_prince(&NanScore, &schedule, &x1, &dopri(1e-5), &mut NoProgress).unwrap_err();
    assert!(matches!(e, SampleError::StepSizeUnderflow { .. } | SampleError::MaxStepsExceeded { .. }), "{e}");
    let e = heun(&NanScore, &schedule, &x1, &fixed(3, TimeGrid::UniformT), &mut NoProgress).unwrap_err();
    assert!(matches!(e, SampleError::NonFinite { .. }), "{e}");
}
