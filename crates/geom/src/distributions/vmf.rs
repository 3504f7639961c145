//! The von Mises-Fisher law on S^{d-1}; see [`VonMisesFisher`] for its density and sampler.

use super::ManifoldDistribution;
use crate::special::{ln_sphere_area, log_bessel_i_normalized, log_bessel_ie};
use crate::{GeomError, Result};
use nalgebra::DVector;
use rand::Rng;
use rand_distr::{Beta, Distribution, StandardNormal};
use std::f64::consts::PI;

/// Tolerance on | |mu| - 1 | accepted by [`VonMisesFisher::new`].
const MU_TOL: f64 = 1e-9;

/// The von Mises-Fisher law vMF(mu, kappa) on the unit sphere S^{d-1} in R^d, d >= 2.
///
/// `log_prob` is w.r.t. the surface-area measure of the unit sphere (the uniform law, kappa = 0, has
/// log-density -ln area(S^{d-1}), e.g. -ln(4 pi) on S^2). Points are `DVector<f64>` of length d.
///
/// The density:
///   p(x) = C_d(kappa) exp(kappa <mu, x>),  C_d(kappa) = kappa^{d/2 - 1} / ((2 pi)^{d/2} I_{d/2 - 1}(kappa)),
/// with C_d(0) = 1 / area(S^{d-1}). For d = 3, C_3(kappa) = kappa / (4 pi sinh kappa).
///
/// Numerics: the log-density is evaluated as [ln C_d(kappa) + kappa] - kappa (1 - <mu, x>), where the bracket
/// comes from the exponentially scaled Bessel function (or, for d = 3, from
/// ln kappa - ln(2 pi) - ln(1 - e^{-2 kappa})) and 1 - <mu, x> from |x - mu|^2 / 2 near mu. Nothing
/// overflows or cancels, so the density is accurate from kappa = 0 to kappa = 1e6 and beyond.
///
/// Sampling (exact): x = w mu + sqrt(1 - w^2) v with v uniform on the unit sphere of the tangent space at mu
/// and the cosine w = <mu, x> drawn from its law, proportional to exp(kappa w) (1 - w^2)^{(d - 3)/2} on
/// [-1, 1]:
/// - d = 3: the inverse CDF w = 1 + ln(u + (1 - u) e^{-2 kappa}) / kappa, evaluated through 1 - w;
/// - other d: Wood's (1994) rejection sampler, written in terms of 1 - w and 1 - x0 so that it stays exact
///   for large kappa (b = (d - 1) / (2 kappa + sqrt(4 kappa^2 + (d - 1)^2)) without cancellation).
///
/// ```
/// use geom::distributions::{ManifoldDistribution, VonMisesFisher};
/// use nalgebra::DVector;
///
/// let mu = DVector::from_vec(vec![0.0, 0.0, 1.0]);
/// let vmf = VonMisesFisher::new(mu.clone(), 1e6).unwrap();
/// // ln C_3 + kappa = ln kappa - ln(2 pi) at large kappa.
/// assert!((vmf.log_prob(&mu) - (1e6f64.ln() - (2.0 * std::f64::consts::PI).ln())).abs() < 1e-12);
/// ```
#[derive(Debug, Clone)]
pub struct VonMisesFisher {
    mu: DVector<f64>,
    kappa: f64,
    /// ln C_d(kappa) + kappa, the log-density at mu.
    log_density_at_mu: f64,
    /// Wood's sampler constants (unused for d = 3).
    wood: Option<Wood>,
}

/// Constants of Wood's rejection sampler.
#[derive(Debug, Clone)]
struct Wood {
    /// (d - 1) / (2 kappa + sqrt(4 kappa^2 + (d - 1)^2)).
    b: f64,
    /// x0 = (1 - b) / (1 + b).
    x0: f64,
    /// 1 - x0 = 2 b / (1 + b).
    one_minus_x0: f64,
    /// Beta((d - 1)/2, (d - 1)/2).
    beta: Beta<f64>,
}

impl VonMisesFisher {
    /// vMF(mu, kappa) on S^{d-1}, d = mu.len().
    ///
    /// Errors: `kappa` negative or not finite; `mu` of length below 2, with a non-finite coordinate, or
    /// not a unit vector within 1e-9 (it is renormalised exactly otherwise).
    pub fn new(mu: DVector<f64>, kappa: f64) -> Result<Self> {
        if !kappa.is_finite() || kappa < 0.0 {
            return Err(GeomError::invalid("kappa", kappa, "a finite concentration >= 0"));
        }
        let d = mu.len();
        if d < 2 {
            return Err(GeomError::Shape {
                arg: "mu".into(),
                expected: "a vector of length d >= 2".into(),
                got: format!("length {d}"),
            });
        }
        crate::check::check_finite("mu", mu.as_slice())?;
        let norm = mu.norm();
        crate::check::check_distance("mu", &format!("S^{}", d - 1), "the mean direction", (norm - 1.0).abs(), MU_TOL)?;
        let mu = mu / norm;
        let wood = (d != 3).then(|| {
            let m1 = (d - 1) as f64;
            let b = m1 / (2.0 * kappa + (4.0 * kappa * kappa + m1 * m1).sqrt());
            let beta = Beta::new(0.5 * m1, 0.5 * m1).expect("Beta((d-1)/2, (d-1)/2) has positive parameters");
            Wood { b, x0: (1.0 - b) / (1.0 + b), one_minus_x0: 2.0 * b / (1.0 + b), beta }
        });
        Ok(Self { log_density_at_mu: log_density_at_mu(d, kappa), mu, kappa, wood })
    }

    /// The mean direction (a unit vector).
    pub fn mu(&self) -> &DVector<f64> {
        &self.mu
    }

    /// The concentration kappa >= 0.
    pub fn kappa(&self) -> f64 {
        self.kappa
    }

    /// The ambient dimension d (the law lives on S^{d-1}).
    pub fn d(&self) -> usize {
        self.mu.len()
    }

    /// ln C_d(kappa), the log of the normalising constant w.r.t. surface area:
    /// log_prob(x) = log_normaliser() + kappa <mu, x>. Equals -ln area(S^{d-1}) at kappa = 0.
    pub fn log_normaliser(&self) -> f64 {
        self.log_density_at_mu - self.kappa
    }

    /// The mean resultant length E<mu, x> = A_d(kappa) = I_{d/2}(kappa) / I_{d/2 - 1}(kappa).
    pub fn mean_resultant_length(&self) -> f64 {
        crate::special::sphere_mean_resultant(self.d(), self.kappa)
    }

    /// Draws (1 - w, 1 + w) for the cosine w = <mu, x>, both with full relative accuracy.
    fn sample_cosine<R: Rng + ?Sized>(&self, rng: &mut R) -> (f64, f64) {
        match &self.wood {
            None => {
                // d = 3: inverse CDF. u in (0, 1].
                let u = 1.0 - rng.random::<f64>();
                let kappa = self.kappa;
                if kappa < f64::MIN_POSITIVE {
                    return (2.0 * (1.0 - u), 2.0 * u);
                }
                // ln(u + (1 - u) e^{-2 kappa}) = ln(1 - a), a = (1 - u)(1 - e^{-2 kappa}).
                let a = (1.0 - u) * -(-2.0 * kappa).exp_m1();
                let log_term = if a < 0.5 { (-a).ln_1p() } else { (u + (1.0 - u) * (-2.0 * kappa).exp()).ln() };
                let one_minus_w = (-log_term / kappa).clamp(0.0, 2.0);
                (one_minus_w, 2.0 - one_minus_w)
            }
            Some(wood) => {
                let m1 = (self.d() - 1) as f64;
                let Wood { b, x0, one_minus_x0, beta } = wood;
                loop {
                    let z: f64 = beta.sample(rng);
                    let denom = 1.0 - (1.0 - b) * z;
                    let one_minus_w = 2.0 * b * z / denom;
                    let one_plus_w = 2.0 * (1.0 - z) / denom;
                    let u = 1.0 - rng.random::<f64>();
                    // kappa w + (d - 1) ln(1 - x0 w) - c >= ln u, with c = kappa x0 + (d - 1) ln(1 - x0^2).
                    let log_accept = self.kappa * (one_minus_x0 - one_minus_w)
                        + m1 * ((one_minus_x0 + x0 * one_minus_w) / (one_minus_x0 * (1.0 + x0))).ln();
                    if log_accept >= u.ln() {
                        return (one_minus_w, one_plus_w);
                    }
                }
            }
        }
    }
}

/// ln C_d(kappa) + kappa.
fn log_density_at_mu(d: usize, kappa: f64) -> f64 {
    let nu = 0.5 * d as f64 - 1.0;
    if kappa <= 1.0 {
        // C_d(kappa) = Gamma(nu + 1) (2/kappa)^nu I_nu(kappa)^{-1} / area: the powers of kappa cancel.
        -ln_sphere_area(d) - log_bessel_i_normalized(nu, kappa) + kappa
    } else if d == 3 {
        kappa.ln() - (2.0 * PI).ln() - (-(-2.0 * kappa).exp_m1()).ln()
    } else {
        nu * kappa.ln() - 0.5 * d as f64 * (2.0 * PI).ln() - log_bessel_ie(nu, kappa)
    }
}

impl ManifoldDistribution for VonMisesFisher {
    type Point = DVector<f64>;

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> DVector<f64> {
        let (one_minus_w, one_plus_w) = self.sample_cosine(rng);
        let w = if one_minus_w <= 1.0 { 1.0 - one_minus_w } else { one_plus_w - 1.0 };
        let sin = (one_minus_w * one_plus_w).sqrt();
        // A uniform unit vector orthogonal to mu.
        let v = loop {
            let g = DVector::<f64>::from_fn(self.d(), |_, _| StandardNormal.sample(rng));
            let t = &g - &self.mu * self.mu.dot(&g);
            let n = t.norm();
            if n > 1e-8 * g.norm() && n > 0.0 {
                break t / n;
            }
        };
        let x = &self.mu * w + v * sin;
        let n = x.norm();
        x / n
    }

    /// ln C_d(kappa) + kappa <mu, x>, w.r.t. the surface-area measure.
    ///
    /// Panics if `x` does not have length d.
    fn log_prob(&self, x: &DVector<f64>) -> f64 {
        assert!(x.len() == self.d(), "VonMisesFisher::log_prob: `x` has length {}, expected {}", x.len(), self.d());
        if self.kappa == 0.0 {
            return self.log_density_at_mu;
        }
        let w = self.mu.dot(x);
        let one_minus_w = if w > 0.5 { 0.5 * (x - &self.mu).norm_squared() } else { 1.0 - w };
        self.log_density_at_mu - self.kappa * one_minus_w
    }
}
