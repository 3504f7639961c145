//! Configurations: invalid values are rejected before any work with errors that name the field and the
//! allowed range; serde rejects unknown fields and round-trips.

mod common;

use common::*;
use sample::*;
use scores::Schedule;
use tch::{Device, Kind};

fn assert_names(result: Result<impl std::fmt::Debug>, field: &str) {
    let e = result.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, SampleError::InvalidConfig { .. }) && msg.contains(&format!("`{field}`")),
        "expected an error naming `{field}`, got: {msg}"
    );
    assert!(msg.contains("expected"), "{msg}");
}

#[test]
fn fixed_step_configs_name_the_field() {
    let _lock = serial();
    let ok = FixedStepConfig { n_steps: 10, t_end: 1e-3, ..Default::default() };
    assert!(ok.check().is_ok());
    assert_names(FixedStepConfig { n_steps: 0, ..ok }.check(), "n_steps");
    for t_end in [0.0, 1.0, -0.1, f64::NAN] {
        assert_names(FixedStepConfig { t_end, ..ok }.check(), "t_end");
    }
    assert_names(FixedStepConfig { time_grid: TimeGrid::Karras { rho: 0.0 }, ..ok }.check(), "time_grid.rho");
}

#[test]
fn predictor_corrector_configs_name_the_nested_field() {
    let _lock = serial();
    let ok = PredictorCorrectorConfig::default();
    assert!(ok.check().is_ok());
    let mut c = ok;
    c.predictor.n_steps = 0;
    assert_names(c.check(), "predictor.n_steps");
    let mut c = ok;
    c.corrector.snr = 0.0;
    assert_names(c.check(), "corrector.snr");
    let mut c = ok;
    c.corrector.snr = f64::INFINITY;
    assert_names(c.check(), "corrector.snr");
    let mut c = ok;
    c.corrector.n_steps = 0;
    assert_names(c.check(), "corrector.n_steps");
}

#[test]
fn dormand_prince_configs_name_the_field() {
    let _lock = serial();
    let ok = DormandPrinceConfig::default();
    assert!(ok.check().is_ok());
    assert_names(DormandPrinceConfig { rtol: 0.0, ..ok }.check(), "rtol");
    assert_names(DormandPrinceConfig { atol: -1.0, ..ok }.check(), "atol");
    assert_names(DormandPrinceConfig { max_steps: 0, ..ok }.check(), "max_steps");
    assert_names(DormandPrinceConfig { t_end: 1.5, ..ok }.check(), "t_end");
    assert_names(DormandPrinceConfig { safety: 1.0, ..ok }.check(), "safety");
    assert_names(DormandPrinceConfig { initial_step: Some(0.0), ..ok }.check(), "initial_step");
    assert_names(DormandPrinceConfig { initial_step: Some(2.0), ..ok }.check(), "initial_step");
}

#[test]
fn geodesic_walk_configs_name_the_field() {
    let _lock = serial();
    let ok = GeodesicWalkConfig { n_steps: 10, t_start: 1.0, t_end: 0.01, time_grid: TimeGrid::LogSigma };
    assert_eq!(ok.times().unwrap().len(), 11);
    assert_names(GeodesicWalkConfig { n_steps: 0, ..ok }.check(), "n_steps");
    assert_names(GeodesicWalkConfig { t_end: 0.0, ..ok }.check(), "t_end");
    assert_names(GeodesicWalkConfig { t_start: 0.005, ..ok }.check(), "t_start");
    assert_names(GeodesicWalkConfig { time_grid: TimeGrid::Karras { rho: -2.0 }, ..ok }.times(), "time_grid.rho");
}

#[test]
fn samplers_check_their_config_before_any_work() {
    let _lock = serial();
    let schedule = Schedule::ve(0.01, 50.0).unwrap();
    let score = MixtureScore::gaussian(schedule, &M, S0);
    seed(400);
    let x1 = initial_noise(&schedule, &[4, 2], Kind::Double, Device::Cpu);
    let mut calls = 0;
    let mut observer = |_: usize, _: usize| calls += 1;
    let bad = FixedStepConfig { n_steps: 0, ..Default::default() };
    assert_names(euler_maruyama(&score, &schedule, &x1, &bad, &mut observer), "n_steps");
    assert_names(heun(&score, &schedule, &x1, &bad, &mut observer), "n_steps");
    let bad_pc = PredictorCorrectorConfig {
        corrector: LangevinConfig { snr: -1.0, ..Default::default() },
        ..Default::default()
    };
    assert_names(predictor_corrector(&score, &schedule, &x1, &bad_pc, &mut observer), "corrector.snr");
    let bad_dp = DormandPrinceConfig { rtol: f64::NAN, ..Default::default() };
    assert_names(dormand_prince(&score, &schedule, &x1, &bad_dp, &mut observer), "rtol");
    assert_names(sample(&score, &schedule, &x1, &SamplerConfig::Heun(bad), &mut observer), "n_steps");
    assert_eq!(calls, 0);
}

#[test]
fn serde_round_trips_and_rejects_unknown_fields() {
    let _lock = serial();
    let configs = [
        SamplerConfig::EulerMaruyama(FixedStepConfig::default()),
        SamplerConfig::PredictorCorrector(PredictorCorrectorConfig::default()),
        SamplerConfig::Heun(FixedStepConfig {
            time_grid: TimeGrid::Karras { rho: 7.0 },
            final_denoise: FinalDenoise::Tweedie,
            ..Default::default()
        }),
        SamplerConfig::DormandPrince(DormandPrinceConfig { controller: StepController::Pi, ..Default::default() }),
    ];
    for c in configs {
        let json = serde_json::to_string(&c).unwrap();
        let back: SamplerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c, "{json}");
    }
    // Optional fields take their defaults.
    let c: SamplerConfig = serde_json::from_str(r#"{"solver": "heun", "n_steps": 100, "t_end": 0.001}"#).unwrap();
    assert_eq!(c, SamplerConfig::Heun(FixedStepConfig { n_steps: 100, t_end: 1e-3, ..Default::default() }));
    let c: DormandPrinceConfig =
        serde_json::from_str(r#"{"t_end": 0.001, "rtol": 1e-5, "atol": 1e-5, "max_steps": 100}"#).unwrap();
    assert_eq!(c, DormandPrinceConfig { max_steps: 100, ..Default::default() });
    // Unknown fields are errors that name them.
    let e = serde_json::from_str::<SamplerConfig>(r#"{"solver": "heun", "n_steps": 1, "t_end": 0.1, "n_stpes": 2}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("n_stpes"), "{e}");
    let e = serde_json::from_str::<PredictorCorrectorConfig>(
        r#"{"predictor": {"n_steps": 1, "t_end": 0.1}, "corrector": {"snr": 0.1, "n_steps": 1, "step": 3}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("step"), "{e}");
    let e = serde_json::from_str::<GeodesicWalkConfig>(r#"{"n_steps": 1, "t_start": 1, "t_end": 0.1, "sigma": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sigma"), "{e}");
    let e = serde_json::from_str::<TimeGrid>(r#"{"kind": "karras", "rho": 7, "eta": 1}"#).unwrap_err().to_string();
    assert!(e.contains("eta"), "{e}");
}
