//! The toy data of the M-flow paper (MATH.md section 8), as seeded generators, with the distance to the
//! true manifold and (for the circle) the true density.
//!
//! Every generator draws from a [`ChaCha8Rng`] seeded by its `seed` and returns `[N, d]` f64 CPU tensors.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// Off-manifold noise of the circle and the sphere: radius `1 + NOISE * N(0, 1)`.
pub const NOISE: f64 = 0.01;

/// A toy data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dataset {
    /// Gaussian on a circle (d = 2, n = 1): angle `~ N(pi/2, (pi/4)^2)`, radius `1 + 0.01 N(0, 1)`.
    Circle,
    /// Spherical Gaussian (d = 3, n = 2): both spherical angles `~ N(pi/2, (pi/4)^2)`, `x = r (cos a,
    /// sin a cos b, sin a sin b)`, radius `1 + 0.01 N(0, 1)`.
    SphericalGaussian,
    /// Mixture of two Gaussians on a polynomial surface (d = 3, n = 2): `u ~ 1/2 N((-1, -0.5), 0.5^2 I) +
    /// 1/2 N((1, 0.5), 0.5^2 I)`, `x = R (u_1, u_2, p(u))` with [`surface_height`] and the fixed rotation
    /// [`surface_rotation`]; exactly on the surface.
    PolynomialSurface,
    /// The Lorenz attractor (d = 3, about n = 2): points of trajectories of `(sigma, rho, beta) = (10, 28,
    /// 8/3)` after a burn-in, mapped by `(x, y, z - 25) / 10`.
    Lorenz,
}

impl Dataset {
    /// `circle`, `spherical_gaussian`, `polynomial_surface` or `lorenz`.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Circle => "circle",
            Dataset::SphericalGaussian => "spherical_gaussian",
            Dataset::PolynomialSurface => "polynomial_surface",
            Dataset::Lorenz => "lorenz",
        }
    }

    /// Ambient dimension `d`.
    pub fn ambient_dim(self) -> i64 {
        match self {
            Dataset::Circle => 2,
            _ => 3,
        }
    }

    /// Manifold dimension `n` (for the Lorenz attractor, the usual choice 2).
    pub fn manifold_dim(self) -> i64 {
        match self {
            Dataset::Circle => 1,
            _ => 2,
        }
    }

    /// `n_samples` points, `[n_samples, d]` f64.
    pub fn sample(self, n_samples: usize, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rows: Vec<f64> = match self {
            Dataset::Circle => circle(n_samples, &mut rng),
            Dataset::SphericalGaussian => sphere(n_samples, &mut rng),
            Dataset::PolynomialSurface => surface(n_samples, &mut rng),
            Dataset::Lorenz => lorenz(n_samples, &mut rng),
        };
        Tensor::from_slice(&rows).reshape([n_samples as i64, self.ambient_dim()])
    }

    /// Euclidean distance of each row of `x` (`[B, d]`) to the true manifold (`[B]`, f64); `None` for the
    /// Lorenz attractor (no closed form).
    pub fn distance_to_manifold(self, x: &Tensor) -> Option<Tensor> {
        let x = x.to_kind(Kind::Double).to_device(tch::Device::Cpu);
        match self {
            Dataset::Circle | Dataset::SphericalGaussian => {
                Some((x.square().sum_dim_intlist(-1, false, Kind::Double).sqrt() - 1.0).abs())
            }
            Dataset::PolynomialSurface => Some(surface_distance(&x)),
            Dataset::Lorenz => None,
        }
    }

    /// The true log-density on the manifold (with respect to arc length) of each row's angle (`[B]`, f64),
    /// for the circle only: the wrapped normal `N(pi/2, (pi/4)^2)`. `None` for the others.
    pub fn log_density(self, x: &Tensor) -> Option<Tensor> {
        if self != Dataset::Circle {
            return None;
        }
        let x = x.to_kind(Kind::Double).to_device(tch::Device::Cpu);
        let angle = x.select(1, 1).atan2(&x.select(1, 0));
        let s = PI / 4.0;
        let mut p = angle.zeros_like();
        for k in -3..=3 {
            let z = (&angle + 2.0 * PI * k as f64 - PI / 2.0) / s;
            p += (z.square() * -0.5).exp();
        }
        Some(p.log() - (s * (2.0 * PI).sqrt()).ln())
    }
}

/// One standard normal draw.
fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

fn circle(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let angle = Normal::new(PI / 2.0, PI / 4.0).expect("valid normal");
    let mut out = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let a = angle.sample(rng);
        let r = 1.0 + NOISE * gauss(rng);
        out.extend([r * a.cos(), r * a.sin()]);
    }
    out
}

fn sphere(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let angle = Normal::new(PI / 2.0, PI / 4.0).expect("valid normal");
    let mut out = Vec::with_capacity(3 * n);
    for _ in 0..n {
        let (a, b) = (angle.sample(rng), angle.sample(rng));
        let r = 1.0 + NOISE * gauss(rng);
        out.extend([r * a.cos(), r * a.sin() * b.cos(), r * a.sin() * b.sin()]);
    }
    out
}

/// Height `p(u) = 0.3 u_1^2 - 0.2 u_2^2 + 0.25 u_1 u_2 + 0.1 u_1` of the polynomial surface, and its
/// gradient.
pub fn surface_height(u1: f64, u2: f64) -> (f64, [f64; 2]) {
    let p = 0.3 * u1 * u1 - 0.2 * u2 * u2 + 0.25 * u1 * u2 + 0.1 * u1;
    (p, [0.6 * u1 + 0.25 * u2 + 0.1, -0.4 * u2 + 0.25 * u1])
}

/// The fixed rotation of the polynomial surface: 0.5 rad about the axis `(1, 1, 1) / sqrt 3` (row-major).
pub fn surface_rotation() -> [[f64; 3]; 3] {
    let (c, s) = (0.5f64.cos(), 0.5f64.sin());
    let k = 1.0 / 3f64.sqrt();
    let (x, y, z) = (k, k, k);
    let t = 1.0 - c;
    [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
}

fn surface(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let r = surface_rotation();
    let mut out = Vec::with_capacity(3 * n);
    for i in 0..n {
        let sign = if i % 2 == 0 { -1.0 } else { 1.0 };
        let u1 = sign + 0.5 * gauss(rng);
        let u2 = 0.5 * sign + 0.5 * gauss(rng);
        let p = [u1, u2, surface_height(u1, u2).0];
        out.extend((0..3).map(|a| (0..3).map(|b| r[a][b] * p[b]).sum::<f64>()));
    }
    out
}

/// `y` in the unrotated frame of the polynomial surface: R^T y.
fn surface_frame(y: [f64; 3]) -> [f64; 3] {
    let r = surface_rotation();
    std::array::from_fn(|b| (0..3).map(|a| r[a][b] * y[a]).sum())
}

/// The foot point `(a, b)` (unrotated coordinates) of the point of the rotated polynomial surface nearest
/// to `y`: 50 Gauss-Newton steps on `(a, b, p(a, b))` from `(x_1, x_2)` of R^T y.
pub fn surface_foot_point(y: [f64; 3]) -> (f64, f64) {
    let q = surface_frame(y);
    let (mut a, mut b) = (q[0], q[1]);
    for _ in 0..50 {
        let (p, g) = surface_height(a, b);
        let res = [a - q[0], b - q[1], p - q[2]];
        // J = [[1, 0], [0, 1], [g0, g1]]; solve (J^T J) delta = -J^T res.
        let (j11, j12, j22) = (1.0 + g[0] * g[0], g[0] * g[1], 1.0 + g[1] * g[1]);
        let (r1, r2) = (res[0] + g[0] * res[2], res[1] + g[1] * res[2]);
        let det = j11 * j22 - j12 * j12;
        a -= (j22 * r1 - j12 * r2) / det;
        b -= (j11 * r2 - j12 * r1) / det;
    }
    (a, b)
}

/// Distance of rows `[B, 3]` to the rotated surface, through [`surface_foot_point`].
fn surface_distance(x: &Tensor) -> Tensor {
    let rows = Vec::<f64>::try_from(x.reshape([-1])).expect("f64 rows");
    let dist: Vec<f64> = rows
        .chunks(3)
        .map(|y| {
            let y = [y[0], y[1], y[2]];
            let q = surface_frame(y);
            let (a, b) = surface_foot_point(y);
            let p = surface_height(a, b).0;
            ((a - q[0]).powi(2) + (b - q[1]).powi(2) + (p - q[2]).powi(2)).sqrt()
        })
        .collect();
    Tensor::from_slice(&dist)
}

fn lorenz_rhs(s: [f64; 3]) -> [f64; 3] {
    let (sigma, rho, beta) = (10.0, 28.0, 8.0 / 3.0);
    [sigma * (s[1] - s[0]), s[0] * (rho - s[2]) - s[1], s[0] * s[1] - beta * s[2]]
}

fn rk4(s: [f64; 3], dt: f64) -> [f64; 3] {
    let add = |a: [f64; 3], b: [f64; 3], h: f64| [a[0] + h * b[0], a[1] + h * b[1], a[2] + h * b[2]];
    let k1 = lorenz_rhs(s);
    let k2 = lorenz_rhs(add(s, k1, dt / 2.0));
    let k3 = lorenz_rhs(add(s, k2, dt / 2.0));
    let k4 = lorenz_rhs(add(s, k3, dt));
    [0, 1, 2].map(|i| s[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))
}

/// 16 trajectories (RK4, dt = 0.005, 2000 burn-in steps from `N((0, 0, 25), 10^2 I)`), recorded every
/// 10 steps.
fn lorenz(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n_traj = 16.min(n.max(1));
    let mut out = Vec::with_capacity(3 * n);
    for traj in 0..n_traj {
        let count = n / n_traj + usize::from(traj < n % n_traj);
        let mut s: [f64; 3] = [0.0, 0.0, 25.0].map(|m| m + 10.0 * gauss(rng));
        for _ in 0..2000 {
            s = rk4(s, 0.005);
        }
        for _ in 0..count {
            for _ in 0..10 {
                s = rk4(s, 0.005);
            }
            out.extend([s[0] / 10.0, s[1] / 10.0, (s[2] - 25.0) / 10.0]);
        }
    }
    out
}
