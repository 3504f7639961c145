//! What every MAD-vs-DSM experiment shares: the training settings of its configuration, training one
//! method with checkpoints on disk (resumed when the run folder already holds one), sampling and
//! projecting, the evaluation loss on a fixed held-out batch, and the per-method summary.
//!
//! Checkpoints: `checkpoints/<method>/step-<k>/` holds `weights.safetensors` (weights, EMA weights and AdamW
//! moments), `state.bin` (step, RNG and run identity, bincode) and `history.json` (the loss of every step so
//! far and the training seconds). A checkpoint is written into a temporary folder that is then renamed, so
//! a run interrupted at any moment leaves either the previous checkpoint or the new one, never half of one;
//! older checkpoints are removed after the rename. Running again with the same `--out` resumes every method
//! from its newest checkpoint; [`train::Trainer::resume`] refuses one written by another configuration and
//! names the fields that differ.

use crate::progress::Phase;
use crate::run::{write_atomic, write_json_atomic, RunDir};
use anyhow::{bail, Context, Result};
use geom::TensorManifold;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use sample::{initial_noise, project_samples, SamplerConfig};
use scores::{Schedule, Score};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use train::{
    residual_loss, Checkpoint, Control, LossBatch, MlpConfig, Objective, Observer, OptimConfig, Precision,
    ResidualScore, RunState, StepReport, TensorBase, TrainConfig, Trainer, Weighting,
};

/// The training part of an experiment's configuration: everything of [`TrainConfig`] but the objective
/// (set per method) and the seed (the run's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// The score network.
    pub model: MlpConfig,
    /// The noise schedule.
    pub schedule: Schedule,
    /// The time weighting of the loss.
    pub weighting: Weighting,
    /// AdamW, warm-up and cosine decay, clipping, EMA.
    pub optim: OptimConfig,
    /// Precision of the network and of the batches.
    pub precision: Precision,
    /// Optimiser steps per method.
    pub steps: u64,
    /// Points per batch.
    pub batch_size: i64,
    /// Smallest training time.
    pub t_eps: f64,
    /// Steps between checkpoints on disk (0: only at the end).
    pub checkpoint_every: u64,
}

impl TrainSettings {
    /// The [`TrainConfig`] of one method.
    pub fn config(&self, objective: Objective, seed: u64) -> TrainConfig {
        TrainConfig {
            model: self.model,
            schedule: self.schedule,
            objective,
            weighting: self.weighting,
            optim: self.optim,
            precision: self.precision,
            steps: self.steps,
            batch_size: self.batch_size,
            t_eps: self.t_eps,
            seed,
            checkpoint_every: if self.checkpoint_every == 0 { self.steps } else { self.checkpoint_every },
        }
    }

    /// Validates every field; errors name it as `train.<field>` with its allowed range.
    pub fn check(&self) -> Result<()> {
        self.config(Objective::Dsm, 0).check().map_err(|e| anyhow::anyhow!("invalid config: train.{e}"))?;
        Ok(())
    }
}

/// The sampler every MAD-vs-DSM experiment uses by default: `n_steps` Euler-Maruyama steps on a uniform
/// grid in t down to t = 1e-3, then one Tweedie denoising step.
pub fn em_sampler(n_steps: usize) -> SamplerConfig {
    SamplerConfig::EulerMaruyama(sample::FixedStepConfig {
        n_steps,
        t_end: 1e-3,
        time_grid: sample::TimeGrid::UniformT,
        final_denoise: sample::FinalDenoise::Tweedie,
    })
}

/// One method of a comparison: a name (`"mad"`, `"dsm"`, ...), its objective and its base score.
#[derive(Clone)]
pub struct Method {
    /// The name used in the summary, the checkpoints and the plots.
    pub name: String,
    /// DSM or MAD.
    pub objective: Objective,
    /// The base score (`Some` exactly for MAD).
    pub base: Option<Arc<dyn TensorBase>>,
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Method").field("name", &self.name).field("objective", &self.objective).finish()
    }
}

impl Method {
    /// MAD with `base`, named `name`.
    pub fn mad(name: &str, base: Arc<dyn TensorBase>) -> Self {
        Method { name: name.to_string(), objective: Objective::Mad, base: Some(base) }
    }

    /// Plain DSM, named `name`.
    pub fn dsm(name: &str) -> Self {
        Method { name: name.to_string(), objective: Objective::Dsm, base: None }
    }
}

/// The per-step record kept with every checkpoint: what a resumed run needs for its loss curve and its
/// training time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// The batch loss of every step so far (index = step - 1).
    pub losses: Vec<f64>,
    /// Wall-clock seconds spent training so far (over every resumed session).
    pub train_seconds: f64,
}

/// A trained method.
#[derive(Debug)]
pub struct Trained {
    /// The method's name.
    pub name: String,
    /// The EMA weights as a score.
    pub score: ResidualScore,
    /// The EMA network (for the evaluation loss).
    pub net: train::ScoreMlp,
    /// The method's base score.
    pub base: Option<Arc<dyn TensorBase>>,
    /// The training configuration.
    pub config: TrainConfig,
    /// Loss of every step and training time.
    pub history: History,
    /// The step of the checkpoint the run resumed from, if any.
    pub resumed_from: Option<u64>,
}

impl Trained {
    /// Mean batch loss over the last 5% of the steps (at least one step): the end-of-training loss with
    /// less batch noise than the last step alone.
    pub fn final_loss(&self) -> f64 {
        let l = &self.history.losses;
        let k = (l.len() / 20).max(1).min(l.len());
        if k == 0 {
            return f64::NAN;
        }
        l[l.len() - k..].iter().sum::<f64>() / k as f64
    }

    /// Steps per second over the whole training (steps / train seconds).
    pub fn steps_per_sec(&self) -> f64 {
        self.history.losses.len() as f64 / self.history.train_seconds.max(1e-9)
    }

    /// Per-step losses as `(step, loss)` pairs for plotting.
    pub fn loss_curve(&self) -> Vec<(u64, f64)> {
        self.history.losses.iter().enumerate().map(|(i, l)| (i as u64 + 1, *l)).collect()
    }
}

fn checkpoint_root(run: &RunDir, method: &str) -> PathBuf {
    run.file("checkpoints").join(method)
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:09}")
}

/// Writes a checkpoint into `root/step-<k>/` atomically (module doc) and removes older ones.
pub fn write_checkpoint(root: &Path, checkpoint: &Checkpoint, history: &History) -> Result<PathBuf> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let name = step_dir_name(checkpoint.state.step);
    let tmp = root.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let weights = tmp.join("weights.safetensors");
    Tensor::write_safetensors(&checkpoint.tensors, &weights)
        .with_context(|| format!("cannot write {}", weights.display()))?;
    std::fs::File::open(&weights).and_then(|f| f.sync_all()).ok();
    let state = bincode::serde::encode_to_vec(&checkpoint.state, bincode::config::standard())
        .context("cannot encode the run state")?;
    write_atomic(&tmp.join("state.bin"), &state)?;
    write_json_atomic(&tmp.join("history.json"), history)?;
    let dest = root.join(&name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).with_context(|| format!("cannot replace {}", dest.display()))?;
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
    for entry in std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))? {
        let entry = entry?;
        let n = entry.file_name().to_string_lossy().to_string();
        if n.starts_with("step-") && n != name {
            std::fs::remove_dir_all(entry.path()).ok();
        }
    }
    Ok(dest)
}

/// Reads the newest complete checkpoint under `root`, if there is one (temporary folders of an interrupted
/// write are ignored).
pub fn read_latest_checkpoint(root: &Path) -> Result<Option<(Checkpoint, History, PathBuf)>> {
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(None) };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let Some(dir) = dirs.pop() else { return Ok(None) };
    let weights = dir.join("weights.safetensors");
    let tensors = Tensor::read_safetensors(&weights)
        .with_context(|| format!("cannot read the checkpoint {}", weights.display()))?;
    let state_path = dir.join("state.bin");
    let bytes = std::fs::read(&state_path).with_context(|| format!("cannot read {}", state_path.display()))?;
    let (state, _): (RunState, usize) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
        .with_context(|| format!("{} is not a run state of this build", state_path.display()))?;
    let history_path = dir.join("history.json");
    let history: History = serde_json::from_str(
        &std::fs::read_to_string(&history_path).with_context(|| format!("cannot read {}", history_path.display()))?,
    )
    .with_context(|| format!("{} is malformed", history_path.display()))?;
    if history.losses.len() as u64 != state.step {
        bail!("{}: history has {} losses for step {}", dir.display(), history.losses.len(), state.step);
    }
    Ok(Some((Checkpoint { tensors, state }, history, dir)))
}

/// Reports training to a progress bar, `metrics.jsonl` and the checkpoint folder.
struct RunObserver<'a> {
    run: &'a RunDir,
    method: &'a str,
    root: PathBuf,
    phase: Phase,
    history: History,
    session_start: Instant,
    seconds_before: f64,
    log_every: u64,
    window: Vec<f64>,
    error: Option<anyhow::Error>,
}

impl Observer for RunObserver<'_> {
    fn on_step(&mut self, r: &StepReport) -> Control {
        self.history.losses.push(r.loss);
        self.window.push(r.loss);
        self.phase.set_position(r.step);
        if r.step % self.log_every == 0 {
            let mean = self.window.iter().sum::<f64>() / self.window.len() as f64;
            self.window.clear();
            self.phase.set_message(format!("loss {mean:.4}"));
            let record = serde_json::json!({
                "method": self.method, "step": r.step, "loss": mean, "grad_norm": r.grad_norm, "lr": r.lr,
                "steps_per_sec": r.steps_per_sec,
            });
            if let Err(e) = self.run.append_metric(&record) {
                self.error.get_or_insert(e);
                return Control::Stop;
            }
        }
        if self.error.is_some() {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) {
        self.history.train_seconds = self.seconds_before + self.session_start.elapsed().as_secs_f64();
        if let Err(e) = write_checkpoint(&self.root, checkpoint, &self.history) {
            self.error.get_or_insert(e);
        }
    }
}

/// Trains `method` on `data: [N, ..point_shape]` with `config` (objective taken from the method), writing
/// checkpoints under the run folder and resuming from the newest one there.
pub fn train_method(
    run: &RunDir,
    method: &Method,
    config: TrainConfig,
    point_shape: &[i64],
    data: &Tensor,
    device: Device,
) -> Result<Trained> {
    let config = TrainConfig { objective: method.objective, ..config };
    let root = checkpoint_root(run, &method.name);
    let (mut trainer, history, resumed_from) = match read_latest_checkpoint(&root)? {
        Some((checkpoint, history, dir)) => {
            let trainer =
                Trainer::resume(config, point_shape, method.base.clone(), device, &checkpoint).with_context(|| {
                    format!(
                        "the checkpoint {} was written by another configuration; use another --out folder \
                         or remove it",
                        dir.display()
                    )
                })?;
            (trainer, history, Some(checkpoint.state.step))
        }
        None => (Trainer::new(config, point_shape, method.base.clone(), device)?, History::default(), None),
    };
    let label = match resumed_from {
        Some(s) if s >= config.steps => format!("{}: trained (checkpoint at step {s})", method.name),
        Some(s) => format!("{}: train (resumed at step {s})", method.name),
        None => format!("{}: train", method.name),
    };
    let mut phase = Phase::new(&label, config.steps);
    phase.set_position(trainer.steps_done());
    let mut observer = RunObserver {
        run,
        method: &method.name,
        root,
        phase,
        seconds_before: history.train_seconds,
        history,
        session_start: Instant::now(),
        log_every: (config.steps / 200).clamp(1, 100),
        window: Vec::new(),
        error: None,
    };
    let outcome = trainer.run(data, &mut observer);
    if let Some(e) = observer.error.take() {
        return Err(e.context(format!("{}: cannot record the training", method.name)));
    }
    outcome.with_context(|| format!("{}: training failed", method.name))?;
    observer.phase.finish();
    let history = observer.history;
    Ok(Trained {
        name: method.name.clone(),
        score: trainer.ema_score(),
        net: trainer.ema_net(),
        base: method.base.clone(),
        config,
        history,
        resumed_from,
    })
}

/// A fixed evaluation batch for the held-out loss: `n` rows of `data` (cycled), times uniform in
/// `[t_eps, 1]` and standard normal noise, from a seeded RNG (the same batch for every method).
pub fn eval_batch(data: &Tensor, n: i64, t_eps: f64, seed: u64, kind: Kind, device: Device) -> LossBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(7);
    let n_data = data.size()[0];
    let idx: Vec<i64> = (0..n).map(|i| i % n_data).collect();
    let point: i64 = data.size()[1..].iter().product();
    let t: Vec<f64> = (0..n).map(|_| t_eps + (1.0 - t_eps) * rng.random::<f64>()).collect();
    let eps: Vec<f64> = (0..n * point).map(|_| rng.sample(StandardNormal)).collect();
    let mut shape = data.size();
    shape[0] = n;
    let to = |t: Tensor| t.to_kind(kind).to_device(device);
    LossBatch {
        x0: to(data.index_select(0, &Tensor::from_slice(&idx))),
        t: to(Tensor::from_slice(&t)),
        eps: to(Tensor::from_slice(&eps).reshape(&shape[..])),
    }
}

/// The loss of a trained method's EMA weights on a fixed batch ([`eval_batch`]). MAD's and DSM's losses are
/// the same functional of the total score, `E lambda |sigma s(x_t, t) - target|^2`, so the values of the two
/// compare directly.
pub fn eval_loss(trained: &Trained, batch: &LossBatch) -> f64 {
    tch::no_grad(|| {
        residual_loss(&trained.net, trained.base.as_deref(), &trained.config.schedule, trained.config.weighting, batch)
            .double_value(&[])
    })
}

/// Samples of one method, projected onto the manifold.
#[derive(Debug)]
pub struct Sampled {
    /// Projected samples `[n, ..point_shape]`, f64 on the CPU.
    pub points: Tensor,
    /// The ambient distance of each raw sample to the manifold, `[n]`, f64 on the CPU.
    pub distance_before: Tensor,
    /// Mean of `distance_before`.
    pub mean_distance_before: f64,
    /// Wall-clock seconds of the sampler.
    pub sample_seconds: f64,
}

/// Draws `n` samples from `trained` with `sampler` from the Gaussian initial law of the schedule (seeded by
/// `seed`, the same noise for every method), projects them onto `manifold` and writes them with their
/// pre-projection distances to `samples/<method>.safetensors`.
pub fn sample_method<M: TensorManifold + ?Sized>(
    run: &RunDir,
    trained: &Trained,
    manifold: &M,
    sampler: &SamplerConfig,
    point_shape: &[i64],
    n: i64,
    seed: u64,
    device: Device,
) -> Result<Sampled> {
    let target = SampleTarget {
        name: &trained.name,
        score: &trained.score,
        schedule: &trained.config.schedule,
        kind: trained.config.precision.kind(),
    };
    sample_score(run, &target, manifold, sampler, point_shape, n, seed, device)
}

/// A score to sample with [`sample_score`]: its name (the file name), schedule and precision.
pub struct SampleTarget<'a> {
    /// Written to `samples/<name>.safetensors`.
    pub name: &'a str,
    /// The score.
    pub score: &'a dyn Score,
    /// Its schedule (the initial law and the sampler's time grid).
    pub schedule: &'a Schedule,
    /// The precision of the sampler.
    pub kind: Kind,
}

/// [`sample_method`] for any score (a network-free estimator, say).
#[allow(clippy::too_many_arguments)]
pub fn sample_score<M: TensorManifold + ?Sized>(
    run: &RunDir,
    target: &SampleTarget,
    manifold: &M,
    sampler: &SamplerConfig,
    point_shape: &[i64],
    n: i64,
    seed: u64,
    device: Device,
) -> Result<Sampled> {
    let name = target.name;
    let kind = target.kind;
    tch::manual_seed(seed as i64);
    let shape: Vec<i64> = std::iter::once(n).chain(point_shape.iter().copied()).collect();
    let x1 = initial_noise(target.schedule, &shape, kind, device);
    let mut phase = Phase::new(&format!("{name}: sample"), 1);
    let start = Instant::now();
    let out = tch::no_grad(|| sample::sample(target.score, target.schedule, &x1, sampler, &mut phase))
        .with_context(|| format!("{name}: sampling failed"))?;
    let sample_seconds = start.elapsed().as_secs_f64();
    phase.finish();
    let x = out.x.to_kind(Kind::Double).to_device(Device::Cpu);
    let n_bad = x.isfinite().logical_not().reshape([n, -1]).any_dim(1, false).sum(Kind::Int64).int64_value(&[]);
    if n_bad > 0 {
        bail!("{name}: {n_bad} of {n} samples are not finite (the sampler diverged)");
    }
    let projected = project_samples(manifold, &x).with_context(|| format!("{name}: projection failed"))?;
    let dir = run.file("samples");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(format!("{name}.safetensors"));
    let tmp = dir.join(format!(".{name}.safetensors.tmp{}", std::process::id()));
    Tensor::write_safetensors(
        &[("samples", &projected.points), ("raw", &x), ("distance_before", &projected.distance_before)],
        &tmp,
    )
    .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &file).with_context(|| format!("cannot move {} to {}", tmp.display(), file.display()))?;
    Ok(Sampled {
        points: projected.points,
        distance_before: projected.distance_before,
        mean_distance_before: projected.mean_distance_before,
        sample_seconds,
    })
}

/// What `summary.json` holds for every method (docs/RUNS.md); experiments add their own metrics under
/// `extra` (flattened into the same object).
#[derive(Debug, Clone, Serialize)]
pub struct MethodSummary {
    /// Mean training batch loss over the last 5% of the steps ([`Trained::final_loss`]).
    pub final_loss: f64,
    /// Loss of the EMA weights on a fixed held-out batch, the same for every method ([`eval_loss`]).
    pub eval_loss: f64,
    /// MMD between projected samples and held-out data, with its kernel bandwidth.
    pub mmd: crate::metrics::Mmd,
    /// Mean ambient distance of the raw samples to the manifold, before projection.
    pub dist_to_manifold: f64,
    /// Wall-clock training seconds (over every resumed session).
    pub train_seconds: f64,
    /// Wall-clock sampling seconds.
    pub sample_seconds: f64,
    /// Optimiser steps.
    pub steps: u64,
    /// Training throughput.
    pub steps_per_sec: f64,
    /// The checkpoint step the training resumed from, if any.
    pub resumed_from: Option<u64>,
    /// Experiment-specific metrics.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl MethodSummary {
    /// The common part of a method's summary.
    pub fn new(trained: &Trained, sampled: &Sampled, eval_loss: f64, mmd: crate::metrics::Mmd) -> Self {
        MethodSummary {
            final_loss: trained.final_loss(),
            eval_loss,
            mmd,
            dist_to_manifold: sampled.mean_distance_before,
            train_seconds: trained.history.train_seconds,
            sample_seconds: sampled.sample_seconds,
            steps: trained.history.losses.len() as u64,
            steps_per_sec: trained.steps_per_sec(),
            resumed_from: trained.resumed_from,
            extra: serde_json::Map::new(),
        }
    }

    /// Adds an experiment-specific metric.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extra.insert(key.to_string(), serde_json::to_value(value).expect("metrics serialise to JSON"));
        self
    }
}

/// Prints the end-of-run table: one row per method, columns for the common metrics (MMD as the signed unbiased
/// MMD^2, which is below 0 when samples and data are indistinguishable at that bandwidth) and the given extra
/// keys.
pub fn print_table(title: &str, methods: &[(String, MethodSummary)], extra: &[&str]) {
    println!("\n{title}");
    let mut header = format!(
        "{:<16} {:>11} {:>11} {:>11} {:>9} {:>12} {:>9} {:>9}",
        "method", "final_loss", "eval_loss", "mmd2", "mmd_bw", "dist_before", "train_s", "sample_s"
    );
    for k in extra {
        header.push_str(&format!(" {k:>14}"));
    }
    println!("{header}");
    for (name, s) in methods {
        let mut row = format!(
            "{:<16} {:>11.5} {:>11.5} {:>11.3e} {:>9.4} {:>12.5} {:>9.1} {:>9.1}",
            name,
            s.final_loss,
            s.eval_loss,
            s.mmd.mmd2,
            s.mmd.bandwidth,
            s.dist_to_manifold,
            s.train_seconds,
            s.sample_seconds
        );
        for k in extra {
            match s.extra.get(*k) {
                Some(serde_json::Value::Number(v)) => {
                    row.push_str(&format!(" {:>14.5}", v.as_f64().unwrap_or(f64::NAN)))
                }
                Some(v) if v.get("mmd2").is_some_and(|m| m.is_number()) => {
                    row.push_str(&format!(" {:>14.3e}", v["mmd2"].as_f64().unwrap_or(f64::NAN)))
                }
                Some(v) => row.push_str(&format!(" {:>14}", v.to_string())),
                None => row.push_str(&format!(" {:>14}", "-")),
            }
        }
        println!("{row}");
    }
}

/// The named summaries and the outcomes of a comparison's methods, in the same order.
pub type Compared = (Vec<(String, MethodSummary)>, Vec<Outcome>);

/// A method trained, evaluated on the fixed held-out batch, and sampled.
#[derive(Debug)]
pub struct Outcome {
    /// The trained method.
    pub trained: Trained,
    /// Its projected samples.
    pub sampled: Sampled,
    /// Its loss on the fixed held-out batch.
    pub eval_loss: f64,
}

/// What a comparison shares between its methods: the run folder, the manifold, the point shape, the
/// training and sampling settings, the seed and the device.
pub struct Comparison<'a, M: ?Sized> {
    /// The run folder.
    pub run: &'a RunDir,
    /// The manifold samples are projected onto.
    pub manifold: &'a M,
    /// The shape of one point.
    pub point_shape: Vec<i64>,
    /// Training settings (the same for every method).
    pub train: TrainSettings,
    /// The sampler (the same for every method).
    pub sampler: SamplerConfig,
    /// Samples per method.
    pub n_samples: i64,
    /// The run's seed: network initialisation, batches and sampling noise are the same for every method.
    pub seed: u64,
    /// The device.
    pub device: Device,
}

impl<M: TensorManifold + ?Sized> Comparison<'_, M> {
    /// Trains `method` on `train_data`, evaluates it on `eval`, samples and projects.
    pub fn run_method(&self, method: &Method, train_data: &Tensor, eval: &LossBatch) -> Result<Outcome> {
        let config = self.train.config(method.objective, self.seed);
        let trained = train_method(self.run, method, config, &self.point_shape, train_data, self.device)?;
        let eval_loss = eval_loss(&trained, eval);
        let sampled = sample_method(
            self.run,
            &trained,
            self.manifold,
            &self.sampler,
            &self.point_shape,
            self.n_samples,
            self.seed,
            self.device,
        )?;
        Ok(Outcome { trained, sampled, eval_loss })
    }

    /// The fixed held-out batch for [`Comparison::run_method`]: `n` rows of `test_data`.
    pub fn eval_batch(&self, test_data: &Tensor, n: i64) -> LossBatch {
        eval_batch(test_data, n, self.train.t_eps, self.seed, self.train.precision.kind(), self.device)
    }
}

/// Writes `summary.json` (`experiment`, `seed`, `mmd_kernel`, `methods`, `reference`; docs/RUNS.md) and
/// `loss_curves.png`, and prints the end-of-run table. `other_methods` are methods without a network (e.g.
/// `kernel_smoother`), added to `methods` as they are.
pub fn report(
    run: &RunDir,
    experiment: &str,
    seed: u64,
    summaries: &[(String, MethodSummary)],
    outcomes: &[Outcome],
    other_methods: Vec<(String, serde_json::Value)>,
    reference: serde_json::Value,
    extra: &[&str],
    mmd_note: &str,
) -> Result<()> {
    let mut methods = serde_json::Map::new();
    for (n, s) in summaries {
        methods.insert(n.clone(), serde_json::to_value(s)?);
    }
    methods.extend(other_methods);
    let summary = serde_json::json!({
        "experiment": experiment,
        "seed": seed,
        "mmd_kernel": mmd_note,
        "methods": methods,
        "reference": reference,
    });
    run.write_summary(&summary)?;
    let curves: Vec<(String, Vec<(u64, f64)>)> =
        outcomes.iter().map(|o| (o.trained.name.clone(), o.trained.loss_curve())).collect();
    let series: Vec<(&str, &[(u64, f64)])> = curves.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    crate::plot::loss_curves(&run.file("loss_curves.png"), &format!("{experiment}: training loss"), &series)?;
    print_table(&format!("{experiment} ({mmd_note}; lower is better)"), summaries, extra);
    if let Some(rf) = summary["reference"].as_object() {
        for (k, v) in rf {
            match v.get("mmd2") {
                Some(m) => println!("reference {k:<24} mmd2 {:.3e}", m.as_f64().unwrap_or(f64::NAN)),
                None => println!("reference {k:<24} {v}"),
            }
        }
    }
    println!("\nwrote {} (and loss_curves.png, samples.png)", run.file("summary.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Meta;
    use scores::base::sphere::SphereBase;

    fn settings(steps: u64, every: u64) -> TrainSettings {
        TrainSettings {
            model: MlpConfig { width: 16, depth: 2, ..MlpConfig::default() },
            schedule: Schedule::Ve { sigma_min: 0.01, sigma_max: 3.0 },
            weighting: Weighting::SigmaSquared,
            optim: OptimConfig { warmup_steps: 2, ..OptimConfig::default() },
            precision: Precision::F64,
            steps,
            batch_size: 16,
            t_eps: 1e-3,
            checkpoint_every: every,
        }
    }

    fn circle_data() -> Tensor {
        let a = Tensor::linspace(0.0, 6.0, 50, (Kind::Double, Device::Cpu));
        Tensor::stack(&[a.cos(), a.sin()], 1)
    }

    fn run_dir(tag: &str) -> RunDir {
        let d = std::env::temp_dir().join(format!("mg-mad-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        RunDir::create(&d, &serde_json::json!({}), &Meta::collect("test", 0, Device::Cpu)).unwrap()
    }

    fn mad() -> Method {
        Method::mad("mad", Arc::new(SphereBase::new(2).unwrap()))
    }

    #[test]
    fn interrupted_run_resumes_to_the_same_numbers() {
        let data = circle_data();
        let s = settings(20, 10);
        let full_dir = run_dir("full");
        let full = train_method(&full_dir, &mad(), s.config(Objective::Mad, 3), &[2], &data, Device::Cpu).unwrap();
        assert_eq!(full.history.losses.len(), 20);
        assert_eq!(full.resumed_from, None);

        // An "interrupted" run: 7 steps by hand, a checkpoint on disk, then the runner takes over.
        let part_dir = run_dir("part");
        let m = mad();
        let config = TrainConfig { objective: Objective::Mad, ..s.config(Objective::Mad, 3) };
        let mut trainer = Trainer::new(config, &[2], m.base.clone(), Device::Cpu).unwrap();
        let mut history = History::default();
        for _ in 0..7 {
            history.losses.push(trainer.step(&data).unwrap().loss);
        }
        write_checkpoint(&checkpoint_root(&part_dir, "mad"), &trainer.checkpoint(), &history).unwrap();
        let resumed = train_method(&part_dir, &m, s.config(Objective::Mad, 3), &[2], &data, Device::Cpu).unwrap();
        assert_eq!(resumed.resumed_from, Some(7));
        assert_eq!(resumed.history.losses, full.history.losses);
        let x = circle_data();
        let t = Tensor::full([50], 0.3, (Kind::Double, Device::Cpu));
        let (a, b) = (full.score.residual(&x, &t), resumed.score.residual(&x, &t));
        assert!(a.equal(&b), "EMA weights differ after resuming");

        // Only the newest checkpoint is kept, and a second call resumes from the finished run.
        let ckpts: Vec<_> = std::fs::read_dir(checkpoint_root(&part_dir, "mad")).unwrap().collect();
        assert_eq!(ckpts.len(), 1);
        let again = train_method(&part_dir, &m, s.config(Objective::Mad, 3), &[2], &data, Device::Cpu).unwrap();
        assert_eq!(again.resumed_from, Some(20));
        assert_eq!(again.history.losses, full.history.losses);
        std::fs::remove_dir_all(full_dir.path()).unwrap();
        std::fs::remove_dir_all(part_dir.path()).unwrap();
    }

    #[test]
    fn checkpoint_of_another_config_is_refused() {
        let data = circle_data();
        let dir = run_dir("mismatch");
        train_method(&dir, &mad(), settings(5, 5).config(Objective::Mad, 0), &[2], &data, Device::Cpu).unwrap();
        let mut other = settings(5, 5);
        other.optim.lr = 5e-4;
        let err = train_method(&dir, &mad(), other.config(Objective::Mad, 0), &[2], &data, Device::Cpu).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("optim.lr differs") && msg.contains("another configuration"), "{msg}");
        // A half-written checkpoint folder (an interrupted write) is ignored.
        std::fs::create_dir_all(checkpoint_root(&dir, "dsm").join(".step-000000003.tmp1")).unwrap();
        assert!(read_latest_checkpoint(&checkpoint_root(&dir, "dsm")).unwrap().is_none());
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    #[test]
    fn settings_errors_name_the_field() {
        let mut s = settings(5, 5);
        s.batch_size = 0;
        assert!(s.check().unwrap_err().to_string().contains("train.batch_size"));
        let mut s = settings(5, 5);
        s.model.width = 0;
        assert!(s.check().unwrap_err().to_string().contains("train.model.width"));
    }

    #[test]
    fn final_loss_averages_the_last_steps() {
        let dir = run_dir("final");
        let data = circle_data();
        let mut t =
            train_method(&dir, &Method::dsm("dsm"), settings(3, 0).config(Objective::Dsm, 0), &[2], &data, Device::Cpu)
                .unwrap();
        t.history.losses = (1..=40).map(f64::from).collect();
        assert_eq!(t.final_loss(), 39.5);
        std::fs::remove_dir_all(dir.path()).unwrap();
    }
}
