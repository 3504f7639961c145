//! Manifolds, exp/log maps, projections, finite symmetry groups of SO(3) and distributions on manifolds.
//!
//! Every space comes with two faces (see `../../docs/ARCHITECTURE.md`):
//! - per point, in f64 with nalgebra types: the [`Manifold`] trait, the reference used by property tests;
//! - batched, on `tch::Tensor`s of shape `[B, ..ambient]`, any float dtype and device, differentiable:
//!   the [`TensorManifold`] trait, used by training and sampling.
//!
//! Conventions (`shared/design/MATH.md` section 0): every space is embedded in a Euclidean space with
//! the induced metric, except SO(3), which carries the *angle metric* <U, V> = tr(U^T V) / 2 (half the
//! Frobenius inner product) so that `dist` is the rotation angle and the Laplacian has eigenvalues
//! -l(l+1).
//!
//! ```
//! use geom::{Manifold, Sphere};
//! use nalgebra::DVector;
//!
//! let s2 = Sphere::new(3).unwrap();
//! let x = s2.project(&DVector::from_vec(vec![0.0, 0.0, 2.0])).unwrap();
//! let v = s2.tangent_project(&x, &DVector::from_vec(vec![0.3, 0.0, 5.0]));
//! let y = s2.exp(&x, &v);
//! assert!((s2.dist(&x, &y) - 0.3).abs() < 1e-12);
//! assert!((s2.log(&x, &y) - &v).norm() < 1e-12);
//! ```

pub mod check;
pub mod discrete;
pub mod distributions;
pub mod error;
pub mod euclidean;
pub mod groups;
pub mod manifold;
pub mod so3;
pub mod special;
pub mod sphere;
pub mod tensor_ops;
pub mod torus;

#[cfg(feature = "proptest")]
pub mod invariants;
#[cfg(feature = "proptest")]
pub mod strategies;

pub use discrete::DiscreteSet;
pub use error::{GeomError, Result};
pub use euclidean::Euclidean;
pub use groups::SymmetryGroup;
pub use manifold::{Manifold, TensorManifold, TensorUniformSampler, UniformSampler};
pub use so3::So3;
pub use sphere::Sphere;
pub use torus::Torus;
