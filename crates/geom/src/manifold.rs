//! The two faces of every manifold: per-point f64 geometry ([`Manifold`]) and batched tensor geometry
//! ([`TensorManifold`]).
//!
//! Every space in this crate is embedded in an ambient Euclidean space with the induced metric.
//! Per-point values are nalgebra types in f64 and are the reference; batched values are `tch::Tensor`s of
//! shape `[B, ..ambient]` of any float dtype on any device, differentiable, and agree with the per-point
//! twin (a conformance test checks it in Double precision).

use crate::Result;
use rand::Rng;
use tch::{Device, Kind, Tensor};

/// A Riemannian manifold embedded in a Euclidean space, evaluated one point at a time in f64.
///
/// Points and tangent vectors share one ambient type (`Point`). Per-point operations panic with a message
/// naming the argument when handed non-finite coordinates; use [`Manifold::check_point`] at input
/// boundaries to get an error instead.
pub trait Manifold: Send + Sync {
    /// The ambient representation of points and tangent vectors.
    type Point: Clone + std::fmt::Debug + Send + Sync + 'static;

    /// A short human-readable name such as `S^2` or `SO(3)`.
    fn name(&self) -> String;
    /// Shape of one point in the ambient space, e.g. `[3]` for S^2 or `[3, 3]` for SO(3).
    fn ambient_shape(&self) -> Vec<i64>;
    /// Intrinsic dimension.
    fn dim(&self) -> usize;
    /// Radius of injectivity of exp (infinite for flat spaces, 0 for discrete sets).
    fn injectivity_radius(&self) -> f64;

    /// Closest point of the manifold to an ambient point.
    ///
    /// Errors when the closest point is undefined (for example the sphere's projection of 0) or the
    /// input is not finite.
    fn project(&self, x: &Self::Point) -> Result<Self::Point>;
    /// Orthogonal projection of an ambient vector `v` onto the tangent space at `x`.
    fn tangent_project(&self, x: &Self::Point, v: &Self::Point) -> Self::Point;
    /// Riemannian exponential map at `x` of the tangent vector `v`.
    fn exp(&self, x: &Self::Point, v: &Self::Point) -> Self::Point;
    /// Riemannian logarithm: the tangent vector at `x` pointing to `y` with length `dist(x, y)`.
    ///
    /// On the cut locus (antipodal points, rotations by pi) one of the minimising geodesics is returned.
    fn log(&self, x: &Self::Point, y: &Self::Point) -> Self::Point;
    /// Geodesic distance.
    fn dist(&self, x: &Self::Point, y: &Self::Point) -> f64;
    /// Riemannian inner product of tangent vectors at `x` (the ambient one for embedded spaces).
    fn inner(&self, x: &Self::Point, u: &Self::Point, v: &Self::Point) -> f64;
    /// Ambient Euclidean distance from `x` to the manifold.
    fn distance_to_manifold(&self, x: &Self::Point) -> Result<f64>;
    /// Checks that `x` is finite and within ambient distance `tol` of the manifold.
    ///
    /// `arg` names the argument in the error.
    fn check_point(&self, arg: &str, x: &Self::Point, tol: f64) -> Result<()>;

    /// The coordinates of a point, row-major, as a flat vector (for conversion to tensors).
    fn to_flat(&self, x: &Self::Point) -> Vec<f64>;
    /// A point from flat row-major coordinates; errors on a wrong length.
    #[allow(clippy::wrong_self_convention)] // the manifold (self) knows the shape; the point is built from `flat`
    fn from_flat(&self, flat: &[f64]) -> Result<Self::Point>;
}

/// Manifolds with a uniform law (normalised Riemannian volume, or Haar measure).
pub trait UniformSampler: Manifold {
    /// One point from the uniform law.
    fn sample_uniform<R: Rng + ?Sized>(&self, rng: &mut R) -> Self::Point;
    /// Log of the total Riemannian volume in this crate's reporting convention
    /// (area of the unit sphere for S^2, 8 pi^2 for SO(3) with the angle metric, K for a discrete set).
    fn log_volume(&self) -> f64;
}

/// Batched geometry on tensors of shape `[B, ..ambient]`.
///
/// All functions keep the dtype and device of their inputs, are differentiable, and stay finite (values and
/// gradients) at the singular points of the geometry through Taylor branches and safe denominators.
/// Shapes are asserted: a shape mismatch panics with a message naming the argument.
/// Finiteness is not checked inside the hot path; call [`TensorManifold::validate`] at input boundaries.
pub trait TensorManifold: Send + Sync {
    /// Shape of one point in the ambient space.
    fn point_shape(&self) -> Vec<i64>;
    /// Closest point on the manifold, `[B, ..ambient] -> [B, ..ambient]`.
    fn project_t(&self, x: &Tensor) -> Tensor;
    /// Tangent projection of `v` at `x`, both `[B, ..ambient]`.
    fn tangent_project_t(&self, x: &Tensor, v: &Tensor) -> Tensor;
    /// Exponential map, `x, v: [B, ..ambient] -> [B, ..ambient]`.
    fn exp_t(&self, x: &Tensor, v: &Tensor) -> Tensor;
    /// Logarithm map, `x, y: [B, ..ambient] -> [B, ..ambient]`.
    fn log_t(&self, x: &Tensor, y: &Tensor) -> Tensor;
    /// Geodesic distance, `x, y: [B, ..ambient] -> [B]`.
    fn dist_t(&self, x: &Tensor, y: &Tensor) -> Tensor;
    /// Ambient distance to the manifold, `[B, ..ambient] -> [B]`.
    fn distance_to_manifold_t(&self, x: &Tensor) -> Tensor;
    /// Membership with tolerance, `[B, ..ambient] -> [B]` of Kind::Bool.
    fn is_member_t(&self, x: &Tensor, tol: f64) -> Tensor {
        self.distance_to_manifold_t(x).le(tol)
    }
    /// Checks shape, finiteness and (when `tol` is given) membership of a batch; errors name `arg` and the
    /// first bad row.
    fn validate(&self, arg: &str, x: &Tensor, tol: Option<f64>) -> Result<()>;
}

/// Batched uniform sampling.
pub trait TensorUniformSampler: TensorManifold {
    /// `n` points from the uniform law, shape `[n, ..ambient]`, drawn with libtorch's generator
    /// (seed it with `tch::manual_seed`).
    fn sample_uniform_t(&self, n: i64, kind: Kind, device: Device) -> Tensor;
}
