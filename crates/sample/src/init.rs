//! The initial law of the reverse-time samplers (MATH.md section 3).
//!
//! - VE: N(0, sigma_max^2 I), the law of x_1 = x_0 + sigma_max eps up to the data's spread (negligible when
//!   sigma_max is much larger than the data's diameter); optionally alpha_1 m + sigma_1 eps with m drawn from
//!   a base law the caller passes in (the exact t = 1 marginal of that base law).
//! - VP: N(0, I), the limit of alpha_1 x_0 + sigma_1 eps as alpha_1 -> 0.
//!
//! Noise comes from libtorch's generator on the requested device: seed it with `tch::manual_seed`.

use crate::tensor_util::check_state;
use crate::Result;
use scores::Schedule;
use tch::{Device, Kind, Tensor};

/// Draws the initial state of a reverse-time sampler: `shape = [B, ..ambient]`, of dtype `kind` on `device`.
///
/// VE: N(0, sigma_max^2 I); VP: N(0, I).
pub fn initial_noise(schedule: &Schedule, shape: &[i64], kind: Kind, device: Device) -> Tensor {
    let z = Tensor::randn(shape, (kind, device));
    match schedule {
        Schedule::Ve { sigma_max, .. } => z * *sigma_max,
        Schedule::Vp { .. } => z,
    }
}

/// Draws alpha_1 m + sigma_1 eps for base-law samples `m: [B, ..ambient]`: the exact t = 1 marginal of the
/// base law under `schedule` (for VE: m + sigma_max eps). Same shape, dtype and device as `base`.
///
/// Errors naming `base` if it is not a floating-point batch of finite values.
pub fn initial_noise_with_base(schedule: &Schedule, base: &Tensor) -> Result<Tensor> {
    check_state("base", base)?;
    Ok(base * schedule.alpha(1.0) + base.randn_like() * schedule.sigma(1.0))
}
