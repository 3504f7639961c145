//! Training: a small M-flow learns the circle (reconstruction error falls, samples lie near the circle),
//! every schedule and model kind trains, early stopping restores the best weights, runs are reproducible.

use mflow::{
    train, Control, Dataset, EvalReport, ManifoldFlow, ModelConfig, ModelKind, Observer, Phase, Schedule, StepReport,
    TrainConfig,
};
use tch::{Device, Kind, Tensor};

fn setup() {
    tch::set_num_threads(1);
}

fn mean(t: &Tensor) -> f64 {
    t.mean(Kind::Double).double_value(&[])
}

fn small(kind: ModelKind, d: i64, n: i64) -> ModelConfig {
    let mut c = ModelConfig::new(kind, d, n);
    c.outer.layers = 3;
    c.outer.hidden = 16;
    c.outer.blocks = 1;
    c.inner.hidden = 8;
    c.inner.blocks = 1;
    c.encoder.hidden = 16;
    c.encoder.blocks = 1;
    c
}

#[derive(Default)]
struct Record {
    losses: Vec<(Phase, f64)>,
    evals: Vec<EvalReport>,
}

impl Observer for Record {
    fn on_step(&mut self, r: &StepReport) -> Control {
        assert!(r.lr > 0.0 && r.grad_norm.is_finite());
        self.losses.push((r.phase, r.loss));
        Control::Continue
    }
    fn on_eval(&mut self, r: &EvalReport) {
        self.evals.push(*r);
    }
}

#[test]
fn mflow_learns_the_circle() {
    setup();
    let data = Dataset::Circle.sample(2000, 0);
    let test = Dataset::Circle.sample(500, 1);
    let mut model = ManifoldFlow::new(&small(ModelKind::MFlow, 2, 1), 0, Device::Cpu).unwrap();
    let rec0 = mean(&model.reconstruction_error(&test).unwrap());
    let config = TrainConfig {
        schedule: Schedule::Sequential { manifold_steps: 300, density_steps: 300 },
        batch_size: 128,
        eval_every: 25,
        patience: None,
        ..TrainConfig::default()
    };
    let mut rec = Record::default();
    let out = train(&mut model, &data, &config, &mut rec).unwrap();
    assert_eq!(out.phase_steps, vec![(Phase::Manifold, 300), (Phase::Density, 300)]);
    let rec1 = mean(&model.reconstruction_error(&test).unwrap());
    let samples = model.sample(500, 2);
    let d = Dataset::Circle.distance_to_manifold(&samples).unwrap();
    let dist = mean(&d);
    let q = |p: f64| d.quantile_scalar(p, None, false, "linear").double_value(&[]);
    eprintln!("distance quantiles 0.5 {:.4} 0.9 {:.4} 0.99 {:.4}", q(0.5), q(0.9), q(0.99));
    let lp_true = mean(&Dataset::Circle.log_density(&samples).unwrap());
    let lp_model = mean(&model.log_prob(&test).unwrap());
    eprintln!("rec {rec0:.4} -> {rec1:.5}; sample distance {dist:.4}; true log-density of samples {lp_true:.3}; model log p(test) {lp_model:.3}; best {:?}", out.best_validation);
    assert!(rec1 < rec0 / 20.0 && rec1 < 0.01, "reconstruction error {rec0} -> {rec1}");
    assert!(q(0.5) < 0.02 && q(0.9) < 0.1, "samples far from the circle: median {}, 90 % {}", q(0.5), q(0.9));
    assert!(dist < 0.05, "samples at mean distance {dist} from the circle");
}

fn short(schedule: Schedule) -> TrainConfig {
    TrainConfig { schedule, batch_size: 64, eval_every: 20, patience: None, ..TrainConfig::default() }
}

/// Mean of the first and of the last ten losses of a phase.
fn first_last(r: &Record, phase: Phase) -> (f64, f64) {
    let l: Vec<f64> = r.losses.iter().filter(|(p, _)| *p == phase).map(|(_, l)| *l).collect();
    let m = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    (m(&l[..10]), m(&l[l.len() - 10..]))
}

#[test]
fn every_schedule_and_model_kind_trains() {
    setup();
    let data = Dataset::Circle.sample(600, 3);
    let runs = [
        (ModelKind::MFlow, Schedule::Alternating { cycles: 2, manifold_steps: 20, density_steps: 10 }, Phase::Manifold),
        (ModelKind::MFlow, Schedule::Simultaneous { steps: 50 }, Phase::Joint),
        (ModelKind::MeFlow, Schedule::Sequential { manifold_steps: 50, density_steps: 20 }, Phase::Manifold),
        (ModelKind::MeFlow, Schedule::Sequential { manifold_steps: 10, density_steps: 40 }, Phase::Density),
        (ModelKind::Pie, Schedule::Simultaneous { steps: 50 }, Phase::Joint),
        (ModelKind::Af, Schedule::Simultaneous { steps: 50 }, Phase::Joint),
    ];
    for (kind, schedule, watched) in runs {
        let mut model = ManifoldFlow::new(&small(kind, 2, 1), 1, Device::Cpu).unwrap();
        let mut rec = Record::default();
        let out = train(&mut model, &data, &short(schedule), &mut rec).unwrap();
        assert_eq!(out.steps_done, schedule.total_steps());
        let (first, last) = first_last(&rec, watched);
        assert!(last < first, "{kind:?} {schedule:?}: {watched:?} loss {first} -> {last}");
        assert!(model.sample(10, 0).isfinite().all().int64_value(&[]) == 1);
    }
}

#[test]
fn early_stopping_restores_the_best_weights() {
    setup();
    let data = Dataset::Circle.sample(400, 4);
    let mut model = ManifoldFlow::new(&small(ModelKind::MFlow, 2, 1), 2, Device::Cpu).unwrap();
    let config = TrainConfig {
        schedule: Schedule::Simultaneous { steps: 400 },
        batch_size: 16,
        eval_every: 2,
        patience: Some(1),
        validation_fraction: 0.25,
        ..TrainConfig::default()
    };
    let mut rec = Record::default();
    let out = train(&mut model, &data, &config, &mut rec).unwrap();
    assert!(out.stopped_early && out.steps_done < 400, "{out:?}");
    let best = rec.evals.iter().map(|e| e.loss).fold(f64::INFINITY, f64::min);
    assert_eq!(out.best_validation, vec![(Phase::Joint, best)]);
    // The restored weights give the best validation loss again.
    let (_, val_idx) = mflow::split_indices(400, &config);
    let val = model.check_data("val", &data.index_select(0, &Tensor::from_slice(&val_idx))).unwrap();
    let again = tch::no_grad(|| mflow::phase_loss(&model, &val, Phase::Joint, &config)).unwrap().double_value(&[]);
    assert!((again - best).abs() < 1e-6 * best.abs().max(1.0), "{again} vs {best}");
}

#[test]
fn same_config_and_seed_give_the_same_run() {
    setup();
    let data = Dataset::SphericalGaussian.sample(300, 5);
    let config = short(Schedule::Alternating { cycles: 2, manifold_steps: 10, density_steps: 10 });
    let run = || {
        let mut model = ManifoldFlow::new(&small(ModelKind::MFlow, 3, 2), 7, Device::Cpu).unwrap();
        let mut rec = Record::default();
        train(&mut model, &data, &config, &mut rec).unwrap();
        (rec.losses, model.sample(20, 1))
    };
    let (a, sa) = run();
    let (b, sb) = run();
    assert_eq!(a, b);
    assert_eq!((sa - sb).abs().max().double_value(&[]), 0.0);
}

/// Slow (MANIFOLD_GEN_SLOW_TESTS=1): an M-flow learns the polynomial surface (d = 3, n = 2) with the
/// sequential schedule; its samples lie near the true surface and the test reconstruction error is small.
#[test]
fn mflow_learns_the_polynomial_surface_slow() {
    if std::env::var("MANIFOLD_GEN_SLOW_TESTS").map(|v| v.is_empty() || v == "0").unwrap_or(true) {
        return;
    }
    setup();
    let data = Dataset::PolynomialSurface.sample(5000, 0);
    let test = Dataset::PolynomialSurface.sample(1000, 1);
    let mut c = small(ModelKind::MFlow, 3, 2);
    c.outer.layers = 5;
    c.outer.hidden = 32;
    c.outer.blocks = 2;
    let mut model = ManifoldFlow::new(&c, 0, Device::Cpu).unwrap();
    let config = TrainConfig {
        schedule: Schedule::Sequential { manifold_steps: 2000, density_steps: 1000 },
        batch_size: 128,
        eval_every: 100,
        patience: Some(5),
        ..TrainConfig::default()
    };
    train(&mut model, &data, &config, &mut ()).unwrap();
    let rec = mean(&model.reconstruction_error(&test).unwrap());
    let d = Dataset::PolynomialSurface.distance_to_manifold(&model.sample(1000, 2)).unwrap();
    let median = d.quantile_scalar(0.5, None, false, "linear").double_value(&[]);
    eprintln!(
        "polynomial surface: test reconstruction error {rec:.5}, sample distance mean {:.4} median {median:.4}",
        mean(&d)
    );
    assert!(rec < 0.01, "test reconstruction error {rec}");
    assert!(median < 0.05, "median sample distance {median}");
}
