//! The reverse-SDE samplers (Euler-Maruyama, predictor-corrector) with an exact Gaussian score recover the
//! data law for VE and VP; seeds, dtypes, devices and progress reports behave.

mod common;

use common::*;
use sample::*;
use scores::Schedule;
use tch::{Device, Kind, Tensor};

const B: i64 = 4000;

fn fixed(n_steps: usize) -> FixedStepConfig {
    FixedStepConfig { n_steps, t_end: 1e-3, ..Default::default() }
}

fn pc(n_steps: usize, snr: f64) -> PredictorCorrectorConfig {
    PredictorCorrectorConfig { predictor: fixed(n_steps), corrector: LangevinConfig { snr, ..Default::default() } }
}

// Tolerances: with B = 4000 samples the sample mean has standard deviation S0 / sqrt(B) = 0.008 per
// coordinate and the relative error of the variance (averaged over 2 coordinates) about 0.016; the bounds
// leave room for 4 to 5 standard deviations plus the discretisation bias.
const MEAN_TOL: f64 = 0.04;
const VAR_TOL: f64 = 0.1;

#[test]
fn euler_maruyama_recovers_the_gaussian_for_ve_and_vp() {
    let _lock = serial();
    for (i, schedule) in schedules().into_iter().enumerate() {
        seed(10 + i as i64);
        let score = MixtureScore::gaussian(schedule, &M, S0);
        let x1 = initial_noise(&schedule, &[B, 2], Kind::Double, Device::Cpu);
        let out = euler_maruyama(&score, &schedule, &x1, &fixed(300), &mut NoProgress).unwrap();
        let (mean_err, var_err) = errors(&out.x, &M, S0);
        assert!(mean_err < MEAN_TOL && var_err < VAR_TOL, "{schedule:?}: mean {mean_err}, var {var_err}");
        assert_eq!((out.n_score_evals, out.n_steps, out.n_rejected), (300, 300, 0));
    }
}

#[test]
fn predictor_corrector_recovers_the_gaussian_for_ve_and_vp() {
    let _lock = serial();
    for (i, schedule) in schedules().into_iter().enumerate() {
        seed(20 + i as i64);
        let score = MixtureScore::gaussian(schedule, &M, S0);
        let x1 = initial_noise(&schedule, &[B, 2], Kind::Double, Device::Cpu);
        let out = predictor_corrector(&score, &schedule, &x1, &pc(150, 0.16), &mut NoProgress).unwrap();
        let (mean_err, var_err) = errors(&out.x, &M, S0);
        assert!(mean_err < MEAN_TOL && var_err < VAR_TOL, "{schedule:?}: mean {mean_err}, var {var_err}");
        assert_eq!(out.n_score_evals, 300);
    }
}

#[test]
fn per_sample_step_norms_work_in_higher_dimension() {
    let _lock = serial();
    // In dimension 64 the per-sample norms concentrate and the per-sample rule is stable.
    let schedule = Schedule::vp(0.1, 20.0).unwrap();
    let mean = vec![0.3; 64];
    let score = MixtureScore::gaussian(schedule, &mean, S0);
    seed(25);
    let x1 = initial_noise(&schedule, &[500, 64], Kind::Double, Device::Cpu);
    let mut config = pc(100, 0.1);
    config.corrector.norms = StepNorms::PerSample;
    let out = predictor_corrector(&score, &schedule, &x1, &config, &mut NoProgress).unwrap();
    let (mean_err, var_err) = errors(&out.x, &mean, S0);
    assert!(mean_err < 0.1 && var_err < 0.1, "mean {mean_err}, var {var_err}");
}

#[test]
fn predictor_corrector_does_at_least_as_well_as_euler_maruyama_at_equal_steps() {
    let _lock = serial();
    // With few steps Euler-Maruyama has a visible variance bias; the corrector pulls the state back
    // towards each marginal. Many samples make the comparison robust (sampling error about 0.005).
    for (i, schedule) in schedules().into_iter().enumerate() {
        seed(30 + i as i64);
        let score = MixtureScore::gaussian(schedule, &M, S0);
        let x1 = initial_noise(&schedule, &[20_000, 2], Kind::Double, Device::Cpu);
        let em = euler_maruyama(&score, &schedule, &x1, &fixed(20), &mut NoProgress).unwrap();
        let pc = predictor_corrector(&score, &schedule, &x1, &pc(20, 0.16), &mut NoProgress).unwrap();
        let (em_mean, em_var) = errors(&em.x, &M, S0);
        let (pc_mean, pc_var) = errors(&pc.x, &M, S0);
        assert!(pc_var <= em_var + 0.015, "{schedule:?}: variance error pc {pc_var} vs em {em_var}");
        assert!(pc_mean <= em_mean + 0.015, "{schedule:?}: mean error pc {pc_mean} vs em {em_mean}");
    }
}

#[test]
fn tweedie_final_step_keeps_the_law_and_costs_one_evaluation() {
    let _lock = serial();
    for (i, schedule) in schedules().into_iter().enumerate() {
        seed(40 + i as i64);
        let score = MixtureScore::gaussian(schedule, &M, S0);
        let x1 = initial_noise(&schedule, &[B, 2], Kind::Double, Device::Cpu);
        let config = FixedStepConfig { final_denoise: FinalDenoise::Tweedie, ..fixed(300) };
        let out = euler_maruyama(&score, &schedule, &x1, &config, &mut NoProgress).unwrap();
        let (mean_err, var_err) = errors(&out.x, &M, S0);
        assert!(mean_err < MEAN_TOL && var_err < VAR_TOL, "{schedule:?}: mean {mean_err}, var {var_err}");
        assert_eq!(out.n_score_evals, 301);
    }
}

#[test]
fn initial_noise_has_the_stated_law() {
    let _lock = serial();
    seed(50);
    let ve = Schedule::ve(0.01, 50.0).unwrap();
    let x = initial_noise(&ve, &[20_000, 3], Kind::Double, Device::Cpu);
    assert_eq!(x.size(), vec![20_000, 3]);
    let (_, var) = mean_and_var(&x);
    assert!((var.sqrt() / 50.0 - 1.0).abs() < 0.02, "std {}", var.sqrt());
    let vp = Schedule::vp(0.1, 20.0).unwrap();
    let (_, var) = mean_and_var(&initial_noise(&vp, &[20_000, 3], Kind::Float, Device::Cpu));
    assert!((var - 1.0).abs() < 0.04, "var {var}");
    let base = Tensor::ones([20_000, 2], (Kind::Double, Device::Cpu)) * 3.0;
    let x = initial_noise_with_base(&ve, &base).unwrap();
    let (mean, var) = mean_and_var(&x);
    assert!(mean.iter().all(|m| (m - 3.0).abs() < 1.5) && (var.sqrt() / 50.0 - 1.0).abs() < 0.02);
    let x = initial_noise_with_base(&vp, &base).unwrap();
    let (mean, _) = mean_and_var(&x);
    assert!(mean.iter().all(|m| (m - 3.0 * vp.alpha(1.0)).abs() < 0.04), "{mean:?}");
}

#[test]
fn the_same_seed_gives_the_same_samples() {
    let _lock = serial();
    let schedule = Schedule::vp(0.1, 20.0).unwrap();
    let score = MixtureScore::gaussian(schedule, &M, S0);
    let run = |s: i64| {
        seed(s);
        let x1 = initial_noise(&schedule, &[64, 2], Kind::Double, Device::Cpu);
        predictor_corrector(&score, &schedule, &x1, &pc(20, 0.1), &mut NoProgress).unwrap().x
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert!(a.equal(&b));
    assert!(!a.equal(&c));
}

#[test]
fn progress_reports_every_step() {
    let _lock = serial();
    let schedule = Schedule::ve(0.01, 50.0).unwrap();
    let score = MixtureScore::gaussian(schedule, &M, S0);
    seed(60);
    let x1 = initial_noise(&schedule, &[8, 2], Kind::Double, Device::Cpu);
    let mut seen = Vec::new();
    let mut observer = |step_idx: usize, n_steps: usize| seen.push((step_idx, n_steps));
    euler_maruyama(&score, &schedule, &x1, &fixed(5), &mut observer).unwrap();
    assert_eq!(seen, (0..5).map(|i| (i, 5)).collect::<Vec<_>>());
}

#[test]
fn dtype_and_device_are_preserved_by_every_sampler() {
    let _lock = serial();
    let mut devices = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        devices.push(Device::Cuda(0));
    }
    let configs = [
        SamplerConfig::EulerMaruyama(fixed(10)),
        SamplerConfig::PredictorCorrector(pc(10, 0.1)),
        SamplerConfig::Heun(fixed(10)),
        SamplerConfig::DormandPrince(DormandPrinceConfig { rtol: 1e-3, atol: 1e-3, ..Default::default() }),
    ];
    for device in devices {
        for schedule in schedules() {
            let score = MixtureScore::gaussian(schedule, &M, S0);
            for kind in [Kind::Float, Kind::Double] {
                seed(70);
                let x1 = initial_noise(&schedule, &[32, 2], kind, device);
                for config in &configs {
                    let out = sample(&score, &schedule, &x1, config, &mut NoProgress).unwrap();
                    assert_eq!(out.x.kind(), kind, "{config:?}");
                    assert_eq!(out.x.device(), device, "{config:?}");
                    assert_eq!(out.x.size(), vec![32, 2], "{config:?}");
                }
            }
        }
    }
}

#[test]
fn bad_initial_states_are_errors_naming_the_argument() {
    let _lock = serial();
    let schedule = Schedule::ve(0.01, 50.0).unwrap();
    let score = MixtureScore::gaussian(schedule, &M, S0);
    let nan = Tensor::from_slice(&[0.0, f64::NAN]).reshape([1, 2]);
    let e = euler_maruyama(&score, &schedule, &nan, &fixed(3), &mut NoProgress).unwrap_err();
    assert!(matches!(e, SampleError::NonFinite { .. }) && e.to_string().contains("x_init"), "{e}");
    let ints = Tensor::from_slice(&[1i64, 2]).reshape([1, 2]);
    let e = heun(&score, &schedule, &ints, &fixed(3), &mut NoProgress).unwrap_err();
    assert!(e.to_string().contains("x_init"), "{e}");
}
