//! Training one method of the `ndsm` experiment: DSM on the matching linear process (a loop of its own with
//! the NDSM score network, AdamW, clipping and EMA of `train`) or NDSM through [`NdsmTrainer`], with the
//! estimator variance measured at fixed parameters at chosen steps, and the final EMA weights written
//! atomically to `checkpoints/<method>/weights.safetensors`.
//!
//! Checkpoints: every `checkpoint_every` steps and at the end, the complete training state (weights, EMA,
//! AdamW moments, those of the neural control variate, step, RNG and the configuration's fields) is written
//! atomically to `checkpoints/<method>/step-<k>/` with [`crate::mad::write_checkpoint`], the loss of every
//! step and the training seconds with it; the variance measurements so far go to
//! `checkpoints/<method>/variance.json`. A run with the same `--out` resumes every method from its newest
//! checkpoint (a checkpoint of another configuration is refused, naming the differing fields) and takes the
//! same steps, with the same numbers, as an uninterrupted run.
//!
//! Randomness, the same as [`NdsmTrainer`]'s: the network is initialised from `ChaCha8Rng` seeded with the
//! run's seed on stream 0 and the batches are drawn on stream 1, so every method starts from the same
//! weights.

use crate::mad::{read_latest_checkpoint, write_checkpoint, History};
use crate::progress::Phase;
use crate::run::{write_json_atomic, RunDir};
use anyhow::{Context, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use scores::gmm::GaussianMixture;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Tensor};
use train::checkpoint::{
    config_diffs, push_named_copies, restore_weights_and_optimiser, rng_stream, ADAM_M_PREFIX, ADAM_V_PREFIX,
    CHECKPOINT_FORMAT, EMA_PREFIX, PARAMS_PREFIX,
};
use train::ndsm::{
    dsm_per_sample_loss, estimator_variance, randn, EstimatorVariance, NdsmCvChoice, NdsmParts, NdsmScoreNet, NdsmSde,
    NdsmTrainConfig, NdsmTrainer, VarianceConfig,
};
use train::{clip_grad_norm, AdamW, Checkpoint, Ema, FlatParams, OptimConfig, RunState, ScoreMlp};

/// The methods of the comparison, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    /// DSM on the matching linear (Ornstein-Uhlenbeck) process, sampled from N(0, I).
    Dsm,
    /// NDSM without control variates.
    Ndsm,
    /// NDSM with the exact control variates.
    NdsmCv,
    /// NDSM with the neural control variate (on the exact one).
    NdsmNcv,
}

impl MethodKind {
    /// Every method, in run order.
    pub const ALL: [MethodKind; 4] = [MethodKind::Dsm, MethodKind::Ndsm, MethodKind::NdsmCv, MethodKind::NdsmNcv];

    /// The name in the summary, the checkpoints and the plots.
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Dsm => "dsm",
            MethodKind::Ndsm => "ndsm",
            MethodKind::NdsmCv => "ndsm_cv",
            MethodKind::NdsmNcv => "ndsm_ncv",
        }
    }
}

/// A trained method.
#[derive(Debug)]
pub struct Trained {
    /// Which method.
    pub kind: MethodKind,
    /// The score network with the EMA weights.
    pub ema: NdsmScoreNet,
    /// The batch loss of every step.
    pub losses: Vec<f64>,
    /// Wall-clock training seconds (the variance measurements excluded).
    pub train_seconds: f64,
    /// `(step, statistics of every estimator)` at the measured steps (empty unless asked for).
    pub variance: Vec<(u64, Vec<EstimatorVariance>)>,
}

impl Trained {
    /// Mean batch loss over the last 5% of the steps (at least one).
    pub fn final_loss(&self) -> f64 {
        let l = &self.losses;
        let k = (l.len() / 20).max(1).min(l.len());
        if k == 0 {
            return f64::NAN;
        }
        l[l.len() - k..].iter().sum::<f64>() / k as f64
    }

    /// Per-step losses as `(step, loss)` pairs (1-based steps) for plotting.
    pub fn loss_curve(&self) -> Vec<(u64, f64)> {
        self.losses.iter().enumerate().map(|(i, l)| (i as u64 + 1, *l)).collect()
    }
}

/// What one step reports.
struct Step {
    loss: f64,
    grad_norm: f64,
    lr: f64,
    cv_objective: Option<f64>,
}

/// DSM on the matching linear process with the NDSM network, optimiser and batch law: rows uniform with
/// replacement, a step index `n` uniform on `0..N`, `t = t_{n+1}`, standard normal `eps`
/// ([`dsm_per_sample_loss`]).
struct DsmTrainer {
    config: NdsmTrainConfig,
    sde: NdsmSde,
    net: NdsmScoreNet,
    flat: FlatParams,
    adam: AdamW,
    ema: Ema,
    rng: ChaCha8Rng,
    step: u64,
}

impl DsmTrainer {
    fn new(config: NdsmTrainConfig, dim: i64, device: Device) -> Result<Self> {
        let config = config.check()?;
        let NdsmParts { sde, net, flat, adam, ema } = NdsmParts::new(&config, dim, device)?;
        Ok(DsmTrainer { config, sde, net, flat, adam, ema, rng: rng_stream(config.seed, 1), step: 0 })
    }

    fn step(&mut self, data: &Tensor) -> Result<Step> {
        let (kind, device) = (self.net.mlp().kind(), self.net.mlp().device());
        let (n_rows, d) = (data.size()[0], data.size()[1]);
        let b = self.config.batch_size;
        let rows: Vec<i64> = (0..b).map(|_| self.rng.random_range(0..n_rows)).collect();
        let t: Vec<f64> = (0..b).map(|_| self.sde.time(self.rng.random_range(0..self.sde.n_steps()) + 1)).collect();
        let eps = randn(&mut self.rng, b, d, kind, device);
        let x0 = data.index_select(0, &Tensor::from_slice(&rows).to_device(device)).to_kind(kind);
        let t = Tensor::from_slice(&t).to_kind(kind).to_device(device);
        let (sde, net) = (&self.sde, &self.net);
        let score = |x: &Tensor, t: &Tensor| net.score(sde, x, t);
        let loss = dsm_per_sample_loss(&score, sde, &x0, &t, &eps, self.config.weighting).mean(kind);
        let value = loss.double_value(&[]);
        anyhow::ensure!(value.is_finite(), "dsm: the loss is not finite at step {}", self.step);
        let grad = self.flat.backward(&loss);
        let grad_norm = clip_grad_norm(grad, self.config.optim.grad_clip);
        anyhow::ensure!(grad_norm.is_finite(), "dsm: the gradient norm is not finite at step {}", self.step);
        let lr = self.config.optim.lr_at(self.step, self.config.steps);
        let grad = self.flat.grad().shallow_clone();
        self.adam.step(self.flat.buffer_mut(), &grad, lr);
        self.ema.update(self.flat.buffer());
        self.step += 1;
        Ok(Step { loss: value, grad_norm, lr, cv_objective: None })
    }

    fn ema_net(&self) -> Result<NdsmScoreNet> {
        let named = self.flat.split(&self.ema.shadow().copy());
        let mlp = ScoreMlp::from_tensors(self.net.mlp().config(), self.net.mlp().point_shape(), &named)?;
        Ok(NdsmScoreNet::from_mlp(mlp)?)
    }

    /// The identity of a DSM run: the configuration's fields and the objective.
    fn fields(config: &NdsmTrainConfig) -> Vec<(String, String)> {
        let mut fields = config.fields();
        fields.push(("objective".into(), "dsm".into()));
        fields
    }

    /// A snapshot as [`NdsmTrainer::checkpoint`] takes it (no control variate).
    fn checkpoint(&self) -> Checkpoint {
        let (m, v) = self.adam.moments();
        let mut tensors = Vec::new();
        for (prefix, flat) in [
            (PARAMS_PREFIX, self.flat.buffer()),
            (EMA_PREFIX, self.ema.shadow()),
            (ADAM_M_PREFIX, m),
            (ADAM_V_PREFIX, v),
        ] {
            push_named_copies(&mut tensors, &self.flat, prefix, flat);
        }
        Checkpoint {
            tensors,
            state: RunState {
                format: CHECKPOINT_FORMAT,
                step: self.step,
                rng: self.rng.clone(),
                config: Self::fields(&self.config),
                point_shape: self.net.mlp().point_shape().to_vec(),
                base: None,
            },
        }
    }

    /// Continues from `checkpoint`; refuses one of another configuration, naming the differing fields.
    fn resume(config: NdsmTrainConfig, dim: i64, device: Device, checkpoint: &Checkpoint) -> Result<Self> {
        let state = &checkpoint.state;
        let mut t = DsmTrainer::new(config, dim, device)?;
        let mine = Self::fields(&t.config);
        let mut diffs = config_diffs(&state.config, &mine);
        if state.format != CHECKPOINT_FORMAT || state.point_shape != [dim] || state.step > t.config.steps {
            diffs.push(format!(
                "format {}, point shape {:?} or step {} does not fit this run",
                state.format, state.point_shape, state.step
            ));
        }
        anyhow::ensure!(diffs.is_empty(), "dsm: the checkpoint does not fit: {}", diffs.join("; "));
        let (ema, adam) = restore_weights_and_optimiser(&mut t.flat, checkpoint, &t.config.optim)?;
        t.ema = ema;
        t.adam = adam;
        t.rng = state.rng.clone();
        t.step = state.step;
        Ok(t)
    }
}

enum Runner {
    Dsm(Box<DsmTrainer>),
    Ndsm(Box<NdsmTrainer>),
}

impl Runner {
    fn checkpoint(&self) -> Checkpoint {
        match self {
            Runner::Dsm(t) => t.checkpoint(),
            Runner::Ndsm(t) => t.checkpoint(),
        }
    }
}

/// Where and how often to measure the estimator variance during training.
#[derive(Debug, Clone, Copy)]
pub struct VarianceProbe<'a> {
    /// The steps (0 = the initial parameters, `steps` = the end), sorted.
    pub steps: &'a [u64],
    /// Batch size, number of batches, weighting and seed of [`estimator_variance`].
    pub config: VarianceConfig,
}

/// Trains `kind` with `config` (its control variate is set from `kind`; `neural` is the neural control
/// variate's configuration for [`MethodKind::NdsmNcv`]) on `data: [N, D]` under `pi`, logging to
/// `metrics.jsonl` and a progress bar, measuring the estimator variance at `probe`'s steps (the score
/// network's current weights, not the EMA, and the neural control variate when there is one), and writes
/// the final EMA weights to `checkpoints/<method>/weights.safetensors` (temporary file, then rename).
///
/// Writes a checkpoint every `checkpoint_every` steps (0: only at the end) and resumes from the newest one
/// under `checkpoints/<method>/` when there is one (module doc).
#[allow(clippy::too_many_arguments)]
pub fn train_method(
    run: &RunDir,
    kind: MethodKind,
    config: NdsmTrainConfig,
    neural: train::ndsm::NeuralCvConfig,
    pi: &GaussianMixture,
    data: &Tensor,
    probe: Option<VarianceProbe>,
    checkpoint_every: u64,
    device: Device,
) -> Result<Trained> {
    let name = kind.name();
    let dim = data.size()[1];
    let control_variate = match kind {
        MethodKind::Dsm | MethodKind::Ndsm => NdsmCvChoice::None,
        MethodKind::NdsmCv => NdsmCvChoice::Exact,
        MethodKind::NdsmNcv => NdsmCvChoice::Neural { config: neural },
    };
    let config = NdsmTrainConfig { control_variate, ..config };
    let data = data.to_kind(config.precision.kind()).to_device(device);
    let root = run.file("checkpoints").join(name);
    let variance_file = root.join("variance.json");
    let (mut runner, history, mut variance) = match read_latest_checkpoint(&root)? {
        Some((checkpoint, history, dir)) => {
            let refused = || {
                format!(
                    "{name}: the checkpoint {} was written by another configuration; use another --out folder or \
                     remove it",
                    dir.display()
                )
            };
            let runner = match kind {
                MethodKind::Dsm => {
                    Runner::Dsm(Box::new(DsmTrainer::resume(config, dim, device, &checkpoint).with_context(refused)?))
                }
                _ => {
                    Runner::Ndsm(Box::new(NdsmTrainer::resume(config, dim, device, &checkpoint).with_context(refused)?))
                }
            };
            let k = checkpoint.state.step;
            let variance: Vec<(u64, Vec<EstimatorVariance>)> = match std::fs::read_to_string(&variance_file) {
                Ok(text) => {
                    serde_json::from_str(&text).with_context(|| format!("{} is malformed", variance_file.display()))?
                }
                Err(_) => Vec::new(),
            };
            let variance = variance.into_iter().filter(|(s, _)| *s < k).collect();
            eprintln!("{name}: resumed at step {k}");
            (runner, history, variance)
        }
        None => {
            let runner = match kind {
                MethodKind::Dsm => Runner::Dsm(Box::new(DsmTrainer::new(config, dim, device)?)),
                _ => Runner::Ndsm(Box::new(NdsmTrainer::new(config, dim, device)?)),
            };
            (runner, History::default(), Vec::new())
        }
    };
    let steps = config.steps;
    let start = history.losses.len() as u64;
    let log_every = (steps / 200).clamp(1, 100);
    let mut phase = Phase::new(&format!("{name}: train"), steps);
    phase.set_position(start);
    let mut losses = history.losses;
    losses.reserve(steps.saturating_sub(start) as usize);
    let mut window = Vec::new();
    let mut train_seconds = history.train_seconds;
    let mut session = Instant::now();
    for s in start..=steps {
        if let Some(p) = &probe {
            if p.steps.contains(&s) {
                train_seconds += session.elapsed().as_secs_f64();
                let v = match &runner {
                    Runner::Dsm(t) => estimator_variance(&t.net, &t.sde, pi, &data, None, &p.config),
                    Runner::Ndsm(t) => estimator_variance(t.net(), t.sde(), pi, &data, t.neural_cv(), &p.config),
                }
                .with_context(|| format!("{name}: estimator variance at step {s}"))?;
                run.append_metric(&serde_json::json!({ "method": name, "variance_at_step": s, "estimators": v }))?;
                variance.push((s, v));
                std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
                write_json_atomic(&variance_file, &variance)?;
                session = Instant::now();
            }
        }
        if s == steps {
            break;
        }
        let r = match &mut runner {
            Runner::Dsm(t) => t.step(&data)?,
            Runner::Ndsm(t) => {
                let r = t.step(pi, &data).with_context(|| format!("{name}: training failed"))?;
                Step { loss: r.loss, grad_norm: r.grad_norm, lr: r.lr, cv_objective: r.cv_objective }
            }
        };
        losses.push(r.loss);
        window.push(r.loss);
        phase.set_position(s + 1);
        if (s + 1) % log_every == 0 {
            let mean = window.iter().sum::<f64>() / window.len() as f64;
            window.clear();
            phase.set_message(format!("loss {mean:.4}"));
            let elapsed = train_seconds + session.elapsed().as_secs_f64();
            run.append_metric(&serde_json::json!({
                "method": name, "step": s + 1, "loss": mean, "grad_norm": r.grad_norm, "lr": r.lr,
                "steps_per_sec": (s + 1 - start) as f64 / (elapsed - history.train_seconds).max(1e-9),
                "cv_objective": r.cv_objective,
            }))?;
        }
        let done = s + 1;
        if done == steps || (checkpoint_every > 0 && done % checkpoint_every == 0) {
            let elapsed = train_seconds + session.elapsed().as_secs_f64();
            let history = History { losses: losses.clone(), train_seconds: elapsed };
            write_checkpoint(&root, &runner.checkpoint(), &history)
                .with_context(|| format!("{name}: cannot write the checkpoint at step {done}"))?;
        }
    }
    train_seconds += session.elapsed().as_secs_f64();
    phase.finish();
    let ema = match &runner {
        Runner::Dsm(t) => t.ema_net()?,
        Runner::Ndsm(t) => t.ema_net()?,
    };
    write_weights(run, name, &ema)?;
    Ok(Trained { kind, ema, losses, train_seconds, variance })
}

/// Writes the network's weights to `checkpoints/<method>/weights.safetensors` through a temporary file.
fn write_weights(run: &RunDir, method: &str, net: &NdsmScoreNet) -> Result<()> {
    let dir = run.file("checkpoints").join(method);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join("weights.safetensors");
    let tmp = dir.join(format!(".weights.safetensors.tmp{}", std::process::id()));
    let named = net.mlp().named_parameters();
    Tensor::write_safetensors(&named, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).ok();
    std::fs::rename(&tmp, &file).with_context(|| format!("cannot move {} to {}", tmp.display(), file.display()))
}

/// The standard normal law N(0, I) on R^dim as a one-component mixture: the reference law of the linear
/// process that DSM learns to reverse.
pub fn standard_normal(dim: usize) -> Result<GaussianMixture> {
    Ok(GaussianMixture::new(
        vec![1.0],
        vec![nalgebra::DVector::zeros(dim)],
        vec![nalgebra::DMatrix::identity(dim, dim)],
    )?)
}

/// The default optimiser of every method: lr 2e-3, 100 warm-up steps, clipping at 1, EMA 0.995.
pub fn default_optim() -> OptimConfig {
    OptimConfig { lr: 2e-3, warmup_steps: 100, ema_decay: 0.995, ..OptimConfig::default() }
}
