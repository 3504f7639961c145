//! Checkpoints as values: named tensors for the caller to write as safetensors, and a serde-serialisable
//! [`RunState`] for the caller to write with bincode. This crate writes no files.

use crate::{AdamW, Ema, FlatParams, OptimConfig, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// Version of the checkpoint layout; [`crate::Trainer::resume`] refuses any other.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Prefix of the current weights in [`Checkpoint::tensors`].
pub const PARAMS_PREFIX: &str = "params.";
/// Prefix of the EMA weights (what sampling uses).
pub const EMA_PREFIX: &str = "ema.";
/// Prefix of AdamW's first moment.
pub const ADAM_M_PREFIX: &str = "adam_m.";
/// Prefix of AdamW's second moment.
pub const ADAM_V_PREFIX: &str = "adam_v.";

/// Everything but the tensors: step, RNG and the identity of the run. Plain structs, vectors, strings and
/// integers only (no tagged enums), so every serde format, bincode included, round-trips it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// [`CHECKPOINT_FORMAT`] at the time of writing.
    pub format: u32,
    /// Optimiser steps completed.
    pub step: u64,
    /// The training RNG, positioned after the last completed step.
    pub rng: ChaCha8Rng,
    /// [`crate::TrainConfig::fields`] of the run.
    pub config: Vec<(String, String)>,
    /// Shape of one point, `[..ambient]`.
    pub point_shape: Vec<i64>,
    /// [`crate::TensorBase::base_name`] of the base score (`None` for DSM).
    pub base: Option<String>,
}

/// A complete snapshot of a run.
///
/// `tensors` are detached CPU copies in the run's precision, named `params.<p>`, `ema.<p>`, `adam_m.<p>`
/// and `adam_v.<p>` for every network parameter `<p>` (`layers.{i}.weight`, `layers.{i}.bias`); write them
/// with `Tensor::write_safetensors` and read them back with `Tensor::read_safetensors`.
#[derive(Debug)]
pub struct Checkpoint {
    /// Weights, EMA weights and AdamW moments.
    pub tensors: Vec<(String, Tensor)>,
    /// Step, RNG state and run identity.
    pub state: RunState,
}

impl Checkpoint {
    /// The tensors named `prefix + name`, with the prefix removed (e.g. `EMA_PREFIX` gives the EMA weights
    /// named as [`crate::ScoreMlp::from_tensors`] expects). Shallow handles.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.tensors
            .iter()
            .filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (s.to_string(), t.shallow_clone())))
            .collect()
    }
}

/// How the run identity a checkpoint was written with (`theirs`) differs from this run's (`mine`), as
/// `(name, value)` pairs from the config's `fields()`: one message per field that differs, is missing from the
/// checkpoint, or is unknown to this build. Empty when they match.
pub fn config_diffs(theirs: &[(String, String)], mine: &[(String, String)]) -> Vec<String> {
    let mut diffs = Vec::new();
    for (name, value) in mine {
        match theirs.iter().find(|(n, _)| n == name) {
            Some((_, t)) if t == value => {}
            Some((_, t)) => diffs.push(format!("{name} differs: checkpoint has {t}, this run has {value}")),
            None => diffs.push(format!("{name} is missing from the checkpoint")),
        }
    }
    for (name, _) in theirs {
        if !mine.iter().any(|(n, _)| n == name) {
            diffs.push(format!("{name} is unknown to this build"));
        }
    }
    diffs
}

/// Appends detached, contiguous CPU copies of the flat buffer `values` (laid out as `flat`), split into
/// named parameters `prefix + <parameter>`, to `tensors`: how a checkpoint stores weights, EMA weights and
/// optimiser moments.
pub fn push_named_copies(tensors: &mut Vec<(String, Tensor)>, flat: &FlatParams, prefix: &str, values: &Tensor) {
    let copy = values.detach().to_device(Device::Cpu).copy();
    for (name, t) in flat.split(&copy) {
        tensors.push((format!("{prefix}{name}"), t.contiguous()));
    }
}

/// Copies a checkpoint's weights (`PARAMS_PREFIX`) into `flat`'s buffer and returns its EMA (`EMA_PREFIX`)
/// and AdamW state (`ADAM_M_PREFIX`, `ADAM_V_PREFIX`, `checkpoint.state.step` steps) under `optim`: the
/// common part of every trainer's resume. Errors name a missing or mis-shaped tensor.
pub fn restore_weights_and_optimiser(
    flat: &mut FlatParams,
    checkpoint: &Checkpoint,
    optim: &OptimConfig,
) -> Result<(Ema, AdamW)> {
    let params = flat.gather(&checkpoint.tensors, PARAMS_PREFIX)?;
    let ema = flat.gather(&checkpoint.tensors, EMA_PREFIX)?;
    let m = flat.gather(&checkpoint.tensors, ADAM_M_PREFIX)?;
    let v = flat.gather(&checkpoint.tensors, ADAM_V_PREFIX)?;
    tch::no_grad(|| flat.buffer_mut().copy_(&params));
    Ok((Ema::from_state(ema, optim.ema_decay), AdamW::from_state(optim, m, v, checkpoint.state.step)))
}

/// The ChaCha8 generator of `seed` on stream `stream`: trainers draw initial weights from stream 0 and
/// batches from stream 1.
pub fn rng_stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}
