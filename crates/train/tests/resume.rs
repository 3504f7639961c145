//! Checkpoint and resume: a run interrupted at any step, written to disk (safetensors + serde) and
//! resumed continues to exactly the numbers of the uninterrupted run; other configurations are refused.

use scores::base::sphere::SphereBase;
use scores::Schedule;
use std::path::PathBuf;
use std::sync::Arc;
use tch::{Device, Tensor};
use train::{
    Checkpoint, Control, MlpConfig, Objective, Observer, OptimConfig, Precision, RunState, StepReport, TensorBase,
    TrainConfig, Trainer,
};

/// Records losses and learning rates, stops after `stop_at` steps, keeps the checkpoints it is handed.
struct Recorder {
    losses: Vec<(u64, f64, f64)>,
    stop_at: Option<u64>,
    checkpoints: Vec<u64>,
}

impl Recorder {
    fn new(stop_at: Option<u64>) -> Self {
        Recorder { losses: Vec::new(), stop_at, checkpoints: Vec::new() }
    }
}

impl Observer for Recorder {
    fn on_step(&mut self, r: &StepReport) -> Control {
        self.losses.push((r.step, r.loss, r.lr));
        if Some(r.step) == self.stop_at {
            Control::Stop
        } else {
            Control::Continue
        }
    }
    fn on_checkpoint(&mut self, c: &Checkpoint) {
        self.checkpoints.push(c.state.step);
    }
}

fn config(objective: Objective, schedule: Schedule, precision: Precision) -> TrainConfig {
    TrainConfig {
        model: MlpConfig { width: 32, depth: 2, n_freqs: 4, ..MlpConfig::default() },
        schedule,
        objective,
        optim: OptimConfig { lr: 2e-3, warmup_steps: 5, ..OptimConfig::default() },
        precision,
        steps: 30,
        batch_size: 64,
        seed: 42,
        checkpoint_every: 10,
        ..TrainConfig::default()
    }
}

fn data() -> Tensor {
    // 50 points on S^2 (a fixed spiral).
    let pts: Vec<f64> = (0..50)
        .flat_map(|i| {
            let z = -1.0 + (2 * i + 1) as f64 / 50.0;
            let r = (1.0 - z * z).sqrt();
            let phi = 2.399963 * i as f64;
            [r * phi.cos(), r * phi.sin(), z]
        })
        .collect();
    Tensor::from_slice(&pts).reshape([50, 3])
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("train-resume-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the checkpoint the way a caller would (safetensors for the tensors, serde for the state) and
/// reads it back.
fn round_trip(c: &Checkpoint, tag: &str) -> Checkpoint {
    let dir = temp_dir(tag);
    let weights = dir.join("checkpoint.safetensors");
    let tmp = dir.join("checkpoint.safetensors.tmp");
    Tensor::write_safetensors(&c.tensors, &tmp).unwrap();
    std::fs::rename(&tmp, &weights).unwrap();
    let state = serde_json::to_string(&c.state).unwrap();
    let tensors = Tensor::read_safetensors(&weights).unwrap();
    let state: RunState = serde_json::from_str(&state).unwrap();
    assert_eq!(state, c.state);
    std::fs::remove_dir_all(&dir).unwrap();
    Checkpoint { tensors, state }
}

fn assert_same_tensors(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        let u = &b.tensors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} missing")).1;
        assert!(t.equal(u), "{name} differs");
    }
    assert_eq!(a.state, b.state);
}

#[test]
fn interrupted_and_resumed_runs_match_the_uninterrupted_run_bitwise() {
    type Case = (Objective, Schedule, Precision, Option<Arc<dyn TensorBase>>, u64);
    let cases: [Case; 2] = [
        (Objective::Dsm, Schedule::ve(0.01, 5.0).unwrap(), Precision::F32, None, 13),
        (
            Objective::Mad,
            Schedule::vp(0.1, 20.0).unwrap(),
            Precision::F64,
            Some(Arc::new(SphereBase::new(3).unwrap())),
            7,
        ),
    ];
    let data = data();
    for (objective, schedule, precision, base, k) in cases {
        let c = config(objective, schedule, precision);
        let mut straight = Trainer::new(c, &[3], base.clone(), Device::Cpu).unwrap();
        let mut rec = Recorder::new(None);
        straight.run(&data, &mut rec).unwrap();
        assert_eq!(rec.checkpoints, vec![10, 20, 30]);
        let full = straight.checkpoint();

        let mut first = Trainer::new(c, &[3], base.clone(), Device::Cpu).unwrap();
        let mut rec1 = Recorder::new(Some(k));
        let out = first.run(&data, &mut rec1).unwrap();
        assert!(out.stopped_early && out.steps_done == k);
        let saved = round_trip(&first.checkpoint(), "a");
        drop(first);
        let mut resumed = Trainer::resume(c, &[3], base.clone(), Device::Cpu, &saved).unwrap();
        assert_eq!(resumed.steps_done(), k);
        let mut rec2 = Recorder::new(None);
        let out = resumed.run(&data, &mut rec2).unwrap();
        assert!(!out.stopped_early && out.steps_done == 30);

        let joined: Vec<_> = rec1.losses.iter().chain(&rec2.losses).copied().collect();
        assert_eq!(joined.len(), rec.losses.len());
        for (a, b) in joined.iter().zip(&rec.losses) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "{objective:?} loss at step {}: {} vs {}", a.0, a.1, b.1);
            assert_eq!(a.2.to_bits(), b.2.to_bits(), "lr at step {}", a.0);
        }
        assert_same_tensors(&resumed.checkpoint(), &full);
        assert!(resumed.ema_flat().equal(&straight.ema_flat()));

        // Resuming a second time from a checkpoint written at a checkpoint step works the same way.
        let mut twice =
            Trainer::resume(c, &[3], base.clone(), Device::Cpu, &round_trip(&resumed.checkpoint(), "b")).unwrap();
        assert_eq!(twice.run(&data, &mut ()).unwrap().steps_done, 30);
    }
}

#[test]
fn the_same_seed_gives_the_same_numbers_and_another_seed_does_not() {
    let c = config(Objective::Dsm, Schedule::ve(0.01, 5.0).unwrap(), Precision::F32);
    let run = |c: TrainConfig| {
        let mut t = Trainer::new(TrainConfig { steps: 5, ..c }, &[3], None, Device::Cpu).unwrap();
        let mut rec = Recorder::new(None);
        t.run(&data(), &mut rec).unwrap();
        (rec.losses, t.params_flat())
    };
    let (l1, p1) = run(c);
    let (l2, p2) = run(c);
    assert_eq!(l1, l2);
    assert!(p1.equal(&p2));
    let (l3, _) = run(TrainConfig { seed: 43, ..c });
    assert_ne!(l1, l3);
}

#[test]
fn resume_refuses_another_config_or_architecture() {
    let c = config(Objective::Dsm, Schedule::ve(0.01, 5.0).unwrap(), Precision::F32);
    let mut t = Trainer::new(c, &[3], None, Device::Cpu).unwrap();
    let mut rec = Recorder::new(Some(3));
    t.run(&data(), &mut rec).unwrap();
    let ck = t.checkpoint();

    let err = |c: TrainConfig, shape: &[i64], base: Option<Arc<dyn TensorBase>>| {
        Trainer::resume(c, shape, base, Device::Cpu, &ck).unwrap_err().to_string()
    };
    let e = err(TrainConfig { optim: OptimConfig { lr: 1e-3, ..c.optim }, ..c }, &[3], None);
    assert!(e.contains("optim.lr differs: checkpoint has 0.002, this run has 0.001"), "{e}");
    let e = err(TrainConfig { model: MlpConfig { width: 16, ..c.model }, ..c }, &[3], None);
    assert!(e.contains("model.width") && !e.contains("optim"), "{e}");
    let e = err(TrainConfig { seed: 1, ..c }, &[3], None);
    assert!(e.contains("seed differs"), "{e}");
    let e = err(TrainConfig { schedule: Schedule::vp(0.1, 20.0).unwrap(), ..c }, &[3], None);
    assert!(e.contains("schedule differs"), "{e}");
    let e = err(c, &[4], None);
    assert!(e.contains("point_shape"), "{e}");
    let mad = TrainConfig { objective: Objective::Mad, ..c };
    let e = err(mad, &[3], Some(Arc::new(SphereBase::new(3).unwrap())));
    assert!(e.contains("objective differs") && e.contains("base differs"), "{e}");

    // checkpoint_every does not change the numbers, so it may differ.
    assert!(Trainer::resume(TrainConfig { checkpoint_every: 7, ..c }, &[3], None, Device::Cpu, &ck).is_ok());

    // Missing tensors are named.
    let mut partial = Checkpoint { tensors: ck.with_prefix(""), state: ck.state.clone() };
    partial.tensors.retain(|(n, _)| n != "adam_v.layers.1.bias");
    let e = Trainer::resume(c, &[3], None, Device::Cpu, &partial).unwrap_err().to_string();
    assert!(e.contains("adam_v.layers.1.bias") && e.contains("missing"), "{e}");
}

#[test]
fn invalid_train_configs_name_the_field() {
    let c = config(Objective::Dsm, Schedule::ve(0.01, 5.0).unwrap(), Precision::F32);
    let e = |c: TrainConfig| c.check().unwrap_err().to_string();
    assert_eq!(
        e(TrainConfig { model: MlpConfig { width: 0, ..c.model }, ..c }),
        "model.width = 0 is invalid: expected >= 1 and <= 2^20"
    );
    assert!(e(TrainConfig { steps: 0, ..c }).starts_with("steps = 0 is invalid: expected >= 1"));
    assert!(e(TrainConfig { batch_size: 0, ..c }).starts_with("batch_size = 0 is invalid"));
    assert!(e(TrainConfig { t_eps: 0.0, ..c }).starts_with("t_eps = 0 is invalid: expected a number in (0, 1)"));
    assert!(e(TrainConfig { optim: OptimConfig { lr: -1.0, ..c.optim }, ..c }).starts_with("optim.lr = -1"));
    let bad = e(TrainConfig { schedule: Schedule::Ve { sigma_min: 0.0, sigma_max: 1.0 }, ..c });
    assert!(bad.starts_with("schedule") && bad.contains("sigma_min"), "{bad}");
    // The objective and the base must agree.
    let mad = TrainConfig { objective: Objective::Mad, ..c };
    let msg = Trainer::new(mad, &[3], None, Device::Cpu).unwrap_err().to_string();
    assert!(msg.starts_with("objective"), "{msg}");
    let msg = Trainer::new(c, &[3], Some(Arc::new(SphereBase::new(3).unwrap())), Device::Cpu).unwrap_err().to_string();
    assert!(msg.starts_with("objective"), "{msg}");
    // Data are checked by run.
    let mut t = Trainer::new(c, &[3], None, Device::Cpu).unwrap();
    let msg = t.run(&Tensor::zeros([4, 2], (tch::Kind::Float, Device::Cpu)), &mut ()).unwrap_err().to_string();
    assert!(msg.contains("data") && msg.contains("[4, 2]"), "{msg}");
    let bad_data = Tensor::from_slice(&[1.0f64, 0.0, 0.0, f64::NAN, 0.0, 0.0]).reshape([2, 3]);
    let msg = t.run(&bad_data, &mut ()).unwrap_err().to_string();
    assert!(msg.contains("row 1"), "{msg}");
}

#[test]
fn configs_round_trip_through_serde_and_refuse_unknown_fields() {
    let c = config(Objective::Mad, Schedule::vp(0.1, 20.0).unwrap(), Precision::F64);
    let s = serde_json::to_string(&c).unwrap();
    let back: TrainConfig = serde_json::from_str(&s).unwrap();
    assert_eq!(back, c);
    let with_extra = s.replacen("\"steps\"", "\"stepz\":1,\"steps\"", 1);
    assert!(serde_json::from_str::<TrainConfig>(&with_extra).unwrap_err().to_string().contains("stepz"));
}
