//! Heat kernels (MATH.md section 4) of Brownian motion with generator the Laplace-Beltrami operator
//! (dX = sqrt(2) dB), on S^d and SO(3): log-density, intrinsic score and exact sampler, accurate for t from
//! 1e-5 to 1e2 through a series at large t and a short-time form at small t.

pub mod so3;
pub mod sphere;
