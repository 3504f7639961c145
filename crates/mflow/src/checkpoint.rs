//! Checkpoints as named tensors with an architecture header, for the caller to write as safetensors
//! (`Tensor::write_safetensors`) and read back (`Tensor::read_safetensors`). This crate writes no files.
//!
//! The header is the tensor [`HEADER_NAME`]: the UTF-8 bytes (`uint8`) of `mflow-checkpoint v1` followed by
//! one `name=value` line per field of [`ModelConfig::fields`]. Loading compares it field by field with the
//! model's own configuration and refuses a checkpoint of another architecture, naming the first field that
//! differs, before touching any weight.

use crate::model::ManifoldFlow;
use crate::{MflowError, ModelConfig, Result};
use tch::{Kind, Tensor};

/// Name of the architecture header tensor.
pub const HEADER_NAME: &str = "__mflow_architecture__";
/// First line of the header.
pub const HEADER_MAGIC: &str = "mflow-checkpoint v1";
/// Prefix of the manifold store's weights (outer flow, encoder).
pub const MANIFOLD_PREFIX: &str = "manifold.";
/// Prefix of the density store's weights (inner flow).
pub const DENSITY_PREFIX: &str = "density.";

/// The header text of a configuration.
pub fn header_text(config: &ModelConfig) -> String {
    let mut s = HEADER_MAGIC.to_string();
    for (n, v) in config.fields() {
        s.push('\n');
        s.push_str(&format!("{n}={v}"));
    }
    s
}

fn mismatch(msg: String) -> MflowError {
    MflowError::CheckpointMismatch(msg)
}

impl ManifoldFlow {
    /// The weights (detached CPU copies, named `manifold.<var>` and `density.<var>`) and the header.
    pub fn checkpoint(&self) -> Vec<(String, Tensor)> {
        let bytes = header_text(self.config()).into_bytes();
        let mut out = vec![(HEADER_NAME.to_string(), Tensor::from_slice(&bytes))];
        for (prefix, vs) in [(MANIFOLD_PREFIX, &self.manifold_vs), (DENSITY_PREFIX, &self.density_vs)] {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            out.extend(
                vars.into_iter().map(|(n, t)| (format!("{prefix}{n}"), t.detach().to_device(tch::Device::Cpu).copy())),
            );
        }
        out
    }

    /// Loads weights written by [`ManifoldFlow::checkpoint`] after checking the header against this
    /// model's configuration (the first differing field is named) and every tensor's presence and shape.
    pub fn load_checkpoint(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        let header = tensors
            .iter()
            .find(|(n, _)| n == HEADER_NAME)
            .ok_or_else(|| mismatch(format!("no `{HEADER_NAME}` tensor: not an mflow checkpoint")))?;
        let h = &header.1;
        if h.kind() != Kind::Uint8 || h.dim() != 1 {
            return Err(mismatch(format!("`{HEADER_NAME}` is not a 1-d uint8 tensor")));
        }
        let bytes = Vec::<u8>::try_from(h)?;
        let text = String::from_utf8(bytes).map_err(|_| mismatch("the header is not UTF-8".to_string()))?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER_MAGIC) {
            return Err(mismatch(format!("the header does not start with `{HEADER_MAGIC}`")));
        }
        let theirs: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once('=')).collect();
        for (name, ours) in self.config().fields() {
            match theirs.iter().find(|(n, _)| *n == name) {
                None => return Err(mismatch(format!("architecture field `{name}` is missing from the checkpoint"))),
                Some((_, v)) if *v != ours => {
                    return Err(mismatch(format!(
                        "architecture field `{name}` is {v} in the checkpoint but {ours} in this model"
                    )))
                }
                _ => {}
            }
        }
        let mut pairs = Vec::new();
        for (prefix, vs) in [(MANIFOLD_PREFIX, &self.manifold_vs), (DENSITY_PREFIX, &self.density_vs)] {
            for (n, var) in vs.variables() {
                let name = format!("{prefix}{n}");
                let src = tensors
                    .iter()
                    .find(|(m, _)| *m == name)
                    .ok_or_else(|| mismatch(format!("tensor `{name}` is missing")))?;
                if src.1.size() != var.size() {
                    return Err(mismatch(format!(
                        "tensor `{name}` has shape {:?} in the checkpoint but {:?} in this model",
                        src.1.size(),
                        var.size()
                    )));
                }
                pairs.push((var, src.1.shallow_clone()));
            }
        }
        tch::no_grad(|| {
            for (var, src) in &pairs {
                var.shallow_clone().f_copy_(&src.to_device(var.device()).to_kind(var.kind()))?;
            }
            Ok::<(), tch::TchError>(())
        })?;
        Ok(())
    }
}
