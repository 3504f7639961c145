//! Small batched helpers shared by the solvers (crate-private).

use crate::{Result, SampleError};
use tch::{Kind, Tensor};

/// `[B]` filled with `t`, dtype and device of `x: [B, ..]`.
pub(crate) fn time_like(t: f64, x: &Tensor) -> Tensor {
    Tensor::full([x.size()[0]], t, (x.kind(), x.device()))
}

/// A per-sample `[B]` tensor reshaped to `[B, 1, .., 1]` so that it broadcasts against `x: [B, ..]`.
pub(crate) fn per_sample(v: &Tensor, x: &Tensor) -> Tensor {
    let mut shape = vec![1i64; x.dim()];
    shape[0] = -1;
    v.reshape(shape)
}

/// Per-sample Euclidean norm over every non-batch dimension: `[B, ..] -> [B]`, same dtype and device.
pub(crate) fn per_sample_norm(x: &Tensor) -> Tensor {
    x.flatten(1, -1).square().sum_dim_intlist([1i64].as_slice(), false, x.kind()).sqrt()
}

/// Whether every entry of `x` is finite (one device synchronisation).
pub(crate) fn all_finite(x: &Tensor) -> bool {
    x.isfinite().all().int64_value(&[]) != 0
}

/// Errors unless every entry of `x` is finite.
pub(crate) fn ensure_finite(what: impl FnOnce() -> String, x: &Tensor) -> Result<()> {
    if all_finite(x) {
        Ok(())
    } else {
        Err(SampleError::NonFinite { what: what() })
    }
}

/// Checks a solver's initial state: a floating-point tensor of rank >= 1 with finite values.
pub(crate) fn check_state(arg: &str, x: &Tensor) -> Result<()> {
    if !matches!(x.kind(), Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double) {
        return Err(SampleError::InvalidArgument {
            arg: arg.to_string(),
            reason: format!("dtype {:?}, expected a floating-point dtype", x.kind()),
        });
    }
    if x.dim() == 0 {
        return Err(SampleError::InvalidArgument {
            arg: arg.to_string(),
            reason: "a scalar, expected a batch of shape [B, ..ambient]".to_string(),
        });
    }
    ensure_finite(|| arg.to_string(), x)
}
