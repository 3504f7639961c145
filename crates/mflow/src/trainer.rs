//! The training loop: phases from the [`Schedule`], tch's AdamW per var store, cosine learning rate,
//! gradient clipping, validation and early stopping with the best weights restored.

use crate::config::ModelKind;
use crate::model::ManifoldFlow;
use crate::train_config::{Schedule, TrainConfig};
use crate::{MflowError, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

/// A training phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Manifold weights on the reconstruction error.
    Manifold,
    /// Inner flow on the NLL of the frozen manifold coordinates.
    Density,
    /// All weights on the combined (M-flow, M_e-flow) or ambient (PIE, AF) loss.
    Joint,
}

impl Phase {
    /// `manifold`, `density` or `joint`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Manifold => "manifold",
            Phase::Density => "density",
            Phase::Joint => "joint",
        }
    }
}

/// What an observer tells the loop after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop the run now (the best weights are still restored).
    Stop,
}

/// One optimiser step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// 0-based step of the run.
    pub step: u64,
    /// Its phase.
    pub phase: Phase,
    /// The training loss of the batch.
    pub loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// One validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalReport {
    /// Steps done when it ran.
    pub step: u64,
    /// The phase whose loss it measures.
    pub phase: Phase,
    /// Validation loss.
    pub loss: f64,
    /// Whether it is the best so far in its scope (the phase, or the run).
    pub improved: bool,
}

/// Receives progress; the library never prints. `()` ignores everything.
pub trait Observer {
    /// After every step.
    fn on_step(&mut self, _report: &StepReport) -> Control {
        Control::Continue
    }
    /// After every validation.
    fn on_eval(&mut self, _report: &EvalReport) {}
}

impl Observer for () {}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Steps taken.
    pub steps_done: u64,
    /// Steps taken per phase, in order of the schedule's segments (merged when consecutive).
    pub phase_steps: Vec<(Phase, u64)>,
    /// Whether patience ran out somewhere.
    pub stopped_early: bool,
    /// Whether the observer stopped the run.
    pub stopped_by_observer: bool,
    /// Best validation loss per monitored scope (empty without validation).
    pub best_validation: Vec<(Phase, f64)>,
}

/// The loss of `phase` on rows `x` (checked, model dtype), as a differentiable scalar.
pub fn phase_loss(model: &ManifoldFlow, x: &Tensor, phase: Phase, config: &TrainConfig) -> Result<Tensor> {
    let w = &config.weights;
    let mean = |t: Tensor| t.mean(t.kind());
    match (phase, model.kind()) {
        (Phase::Joint, ModelKind::Pie | ModelKind::Af) => Ok(-mean(model.ambient_log_prob_unchecked(x)?)),
        (Phase::Density, _) => {
            let v = tch::no_grad(|| model.encode_unchecked(x));
            Ok(-mean(model.coordinate_log_prob(&v)?))
        }
        (Phase::Manifold | Phase::Joint, _) => {
            let nll_weight = if phase == Phase::Joint { w.likelihood } else { w.manifold_phase_likelihood };
            let rec = mean(model.reconstruction_unchecked(x)) * w.reconstruction;
            if nll_weight > 0.0 {
                Ok(rec - mean(model.manifold_log_prob_unchecked(x)?) * nll_weight)
            } else {
                Ok(rec)
            }
        }
    }
}

/// Phases with their step counts, and the scope of early stopping (`true`: each segment on its own).
fn segments(schedule: &Schedule) -> (Vec<(Phase, u64)>, bool) {
    match *schedule {
        Schedule::Sequential { manifold_steps, density_steps } => {
            (vec![(Phase::Manifold, manifold_steps), (Phase::Density, density_steps)], true)
        }
        Schedule::Alternating { cycles, manifold_steps, density_steps } => {
            let one = [(Phase::Manifold, manifold_steps), (Phase::Density, density_steps)];
            ((0..cycles).flat_map(|_| one).collect(), false)
        }
        Schedule::Simultaneous { steps } => (vec![(Phase::Joint, steps)], true),
    }
}

/// Snapshot of every variable of both stores (detached copies), and the handles to restore into.
struct Snapshot(Vec<(Tensor, Tensor)>);

impl Snapshot {
    fn take(model: &ManifoldFlow) -> Snapshot {
        let mut all = Vec::new();
        for vs in [&model.manifold_vs, &model.density_vs] {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            all.extend(vars.into_iter().map(|(_, t)| {
                let copy = t.detach().copy();
                (t, copy)
            }));
        }
        Snapshot(all)
    }

    fn restore(&self) {
        tch::no_grad(|| {
            for (var, saved) in &self.0 {
                var.shallow_clone().copy_(saved);
            }
        });
    }
}

/// Best validation loss and weights of one scope.
struct Monitor {
    best: f64,
    snapshot: Option<Snapshot>,
    bad_evals: u64,
}

impl Monitor {
    fn new() -> Monitor {
        Monitor { best: f64::INFINITY, snapshot: None, bad_evals: 0 }
    }
}

/// Global L2 norm of the gradients of `vars`, scaled down to `max` if larger; returns the norm before.
fn clip(vars: &[Tensor], max: Option<f64>) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = vars.iter().map(|v| v.grad()).filter(|g| g.defined()).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let sq: Vec<Tensor> = grads.iter().map(|g| g.square().sum(Kind::Double)).collect();
        let norm = Tensor::stack(&sq, 0).sum(Kind::Double).sqrt().double_value(&[]);
        if let Some(max) = max {
            if norm > max {
                for g in &grads {
                    let _ = g.shallow_clone().g_mul_scalar_(max / (norm + 1e-12));
                }
            }
        }
        norm
    })
}

/// Rows held out for validation: `round(n_rows * fraction)`, at least 1 if `fraction > 0`.
fn validation_rows(n_rows: i64, fraction: f64) -> i64 {
    if fraction > 0.0 {
        ((n_rows as f64 * fraction).round() as i64).max(1)
    } else {
        0
    }
}

fn split_rows(n_rows: i64, n_val: i64, rng: &mut ChaCha8Rng) -> (Vec<i64>, Vec<i64>) {
    let mut order: Vec<i64> = (0..n_rows).collect();
    order.shuffle(rng);
    let val = order[..n_val as usize].to_vec();
    (order[n_val as usize..].to_vec(), val)
}

/// The split [`train`] uses for `n_rows` rows under `config`: `(training rows, validation rows)`, indices
/// into the data (for evaluating on the same held-out rows afterwards).
pub fn split_indices(n_rows: i64, config: &TrainConfig) -> (Vec<i64>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    split_rows(n_rows, validation_rows(n_rows, config.validation_fraction), &mut rng)
}

/// Trains `model` on `data` (`[N, d]`, finite; the rows are split into training and validation with the
/// config's seed) and restores the best validated weights. Validates the config and the data first.
pub fn train(
    model: &mut ManifoldFlow,
    data: &Tensor,
    config: &TrainConfig,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    config.check(model.kind())?;
    let data = model.check_data("data", data)?;
    let n_rows = data.size()[0];
    let n_val = validation_rows(n_rows, config.validation_fraction);
    if n_rows - n_val < 1 {
        return Err(MflowError::data("data", format!("{n_rows} rows leave none for training after validation")));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let (mut train_idx, val_idx) = split_rows(n_rows, n_val, &mut rng);
    let val = (n_val > 0).then(|| data.index_select(0, &Tensor::from_slice(&val_idx)));

    let (segs, per_segment_scope) = segments(&config.schedule);
    let uses = |p: Phase, manifold: bool| match p {
        Phase::Manifold => manifold,
        Phase::Density => !manifold,
        Phase::Joint => true,
    };
    let planned = |manifold: bool| segs.iter().filter(|(p, _)| uses(*p, manifold)).map(|(_, s)| s).sum::<u64>();
    let o = &config.optim;
    let adamw = nn::AdamW { beta1: o.beta1, beta2: o.beta2, wd: o.weight_decay, eps: 1e-8, amsgrad: false };
    let mut opts = Vec::new();
    for (manifold, vs) in [(true, &model.manifold_vs), (false, &model.density_vs)] {
        let vars = vs.trainable_variables();
        if vars.is_empty() {
            continue;
        }
        let opt = adamw.build(vs, o.lr)?;
        opts.push((manifold, opt, vars, 0u64, planned(manifold)));
    }

    let mut outcome = TrainOutcome {
        steps_done: 0,
        phase_steps: Vec::new(),
        stopped_early: false,
        stopped_by_observer: false,
        best_validation: Vec::new(),
    };
    let mut cursor = train_idx.len();
    let batch = config.batch_size.min(train_idx.len() as i64) as usize;
    let mut monitor = Monitor::new();
    let mut stop_run = false;
    for (seg_idx, &(phase, steps)) in segs.iter().enumerate() {
        let monitor_phase = if per_segment_scope { phase } else { Phase::Joint };
        for _ in 0..steps {
            if cursor + batch > train_idx.len() {
                train_idx.shuffle(&mut rng);
                cursor = 0;
            }
            let idx = Tensor::from_slice(&train_idx[cursor..cursor + batch]);
            cursor += batch;
            let x = data.index_select(0, &idx);
            for (_, opt, _, _, _) in opts.iter_mut() {
                opt.zero_grad();
            }
            let loss = phase_loss(model, &x, phase, config)?;
            let loss_value = loss.double_value(&[]);
            let step = outcome.steps_done;
            let non_finite =
                |what: &str| MflowError::NonFinite { what: what.to_string(), step, phase: phase.name().to_string() };
            if !loss_value.is_finite() {
                return Err(non_finite("loss"));
            }
            loss.backward();
            let mut lr_used = 0.0;
            let stepping: Vec<Tensor> = opts
                .iter()
                .filter(|(m, ..)| uses(phase, *m))
                .flat_map(|(_, _, vars, ..)| vars.iter().map(Tensor::shallow_clone))
                .collect();
            let grad_norm = clip(&stepping, o.grad_clip);
            if !grad_norm.is_finite() {
                return Err(non_finite("gradient norm"));
            }
            for (manifold, opt, _, done, total) in opts.iter_mut() {
                if uses(phase, *manifold) {
                    lr_used = o.lr_at(*done, *total);
                    opt.set_lr(lr_used);
                    opt.step();
                    *done += 1;
                }
            }
            outcome.steps_done += 1;
            match outcome.phase_steps.last_mut() {
                Some((p, n)) if *p == phase => *n += 1,
                _ => outcome.phase_steps.push((phase, 1)),
            }
            let report = StepReport { step, phase, loss: loss_value, lr: lr_used, grad_norm };
            if observer.on_step(&report) == Control::Stop {
                outcome.stopped_by_observer = true;
                stop_run = true;
            }
            if let Some(val) = &val {
                if outcome.steps_done % config.eval_every == 0 {
                    let loss = tch::no_grad(|| phase_loss(model, val, monitor_phase, config))?.double_value(&[]);
                    let improved = loss < monitor.best;
                    if improved {
                        monitor.best = loss;
                        monitor.snapshot = Some(Snapshot::take(model));
                        monitor.bad_evals = 0;
                    } else {
                        monitor.bad_evals += 1;
                    }
                    observer.on_eval(&EvalReport { step: outcome.steps_done, phase: monitor_phase, loss, improved });
                    if config.patience.is_some_and(|p| monitor.bad_evals >= p) {
                        outcome.stopped_early = true;
                        if per_segment_scope {
                            break;
                        }
                        stop_run = true;
                    }
                }
            }
            if stop_run {
                break;
            }
        }
        let scope_ends = per_segment_scope || stop_run || seg_idx + 1 == segs.len();
        if scope_ends {
            if let Some(s) = &monitor.snapshot {
                s.restore();
                outcome.best_validation.push((monitor_phase, monitor.best));
            }
            monitor = Monitor::new();
        }
        if stop_run {
            break;
        }
    }
    Ok(outcome)
}
