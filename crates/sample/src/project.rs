//! The final projection of ambient samples onto the manifold (MATH.md section 3), with the distance to the
//! manifold *before* projection: it measures how well a model learned where the manifold is.

use crate::Result;
use geom::TensorManifold;
use tch::{Kind, Tensor};

/// Samples projected onto a manifold.
#[derive(Debug)]
pub struct Projected {
    /// The projected points, `[B, ..ambient]`, dtype and device of the input.
    pub points: Tensor,
    /// The ambient distance of each input point to the manifold, `[B]`, dtype and device of the input.
    pub distance_before: Tensor,
    /// The mean of `distance_before` (0 for an empty batch), computed in f64.
    pub mean_distance_before: f64,
}

/// Projects `x: [B, ..ambient]` (any float dtype, any device) onto `manifold` with
/// [`TensorManifold::project_t`], and reports the distance to the manifold before projection
/// ([`TensorManifold::distance_to_manifold_t`]).
///
/// Errors (from [`TensorManifold::validate`], naming `x`) on a shape that does not fit the manifold or on
/// non-finite values.
pub fn project_samples<M: TensorManifold + ?Sized>(manifold: &M, x: &Tensor) -> Result<Projected> {
    manifold.validate("x", x, None)?;
    let x = x.detach();
    let distance_before = manifold.distance_to_manifold_t(&x);
    let mean_distance_before =
        if x.size()[0] == 0 { 0.0 } else { distance_before.mean(Kind::Double).double_value(&[]) };
    let points = manifold.project_t(&x);
    Ok(Projected { points, distance_before, mean_distance_before })
}
