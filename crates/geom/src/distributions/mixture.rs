//! Finite mixtures sum_k w_k p_k of laws on one manifold, and random mixtures for synthetic data.

use super::{log_sum_exp, ManifoldDistribution, VonMisesFisher, WrappedNormalSo3};
use crate::{GeomError, Result, So3, Sphere, UniformSampler};
use rand::Rng;

/// A finite mixture sum_k w_k p_k of laws on the same manifold; the weights are normalised to sum to 1.
///
/// `log_prob` is w.r.t. the components' reference measure (they share one, since they share the space).
/// Components with weight 0 are allowed and are never sampled nor evaluated.
#[derive(Debug, Clone)]
pub struct Mixture<D> {
    components: Vec<D>,
    /// Normalised weights.
    weights: Vec<f64>,
    /// ln of the normalised weights (-inf for weight 0).
    log_weights: Vec<f64>,
    /// Cumulative normalised weights; 1 from the last positive weight on.
    cumulative: Vec<f64>,
}

impl<D: ManifoldDistribution> Mixture<D> {
    /// The mixture of `components` with (unnormalised) `weights`.
    ///
    /// Errors: no components (naming `components`); a number of weights different from the number of
    /// components, a negative or non-finite weight, or weights summing to 0 (naming `weights`).
    pub fn new(components: Vec<D>, weights: Vec<f64>) -> Result<Self> {
        if components.is_empty() {
            return Err(GeomError::invalid("components", "an empty list", "at least one component"));
        }
        if weights.len() != components.len() {
            return Err(GeomError::Shape {
                arg: "weights".into(),
                expected: format!("{} weights, one per component", components.len()),
                got: format!("{} weights", weights.len()),
            });
        }
        if let Some(i) = weights.iter().position(|w| !w.is_finite() || *w < 0.0) {
            return Err(GeomError::invalid("weights", format!("{} at index {i}", weights[i]), "finite weights >= 0"));
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 || !total.is_finite() {
            return Err(GeomError::invalid("weights", format!("sum {total}"), "weights with a positive finite sum"));
        }
        let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let log_weights = weights.iter().map(|w| w.ln()).collect();
        let last_positive = weights.iter().rposition(|w| *w > 0.0).expect("the weights have a positive sum");
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .enumerate()
            .map(|(k, w)| {
                acc += w;
                if k >= last_positive {
                    1.0
                } else {
                    acc
                }
            })
            .collect();
        Ok(Self { components, weights, log_weights, cumulative })
    }

    /// The mixture of `components` with equal weights; errors (naming `components`) when there are none.
    pub fn uniform(components: Vec<D>) -> Result<Self> {
        let n = components.len();
        Self::new(components, vec![1.0; n])
    }

    /// The components.
    pub fn components(&self) -> &[D] {
        &self.components
    }

    /// The normalised weights (they sum to 1).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Index of a component drawn with the mixture weights.
    pub fn sample_component<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.random();
        // The first k with cumulative[k] > u; zero-weight components are skipped since their cumulative
        // value equals the previous one.
        self.cumulative.partition_point(|&c| c <= u)
    }
}

impl<D: ManifoldDistribution> ManifoldDistribution for Mixture<D> {
    type Point = D::Point;

    /// A component drawn with the weights, then a sample from it.
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> D::Point {
        let k = self.sample_component(rng);
        self.components[k].sample(rng)
    }

    /// ln sum_k w_k p_k(x), by log-sum-exp (components of weight 0 are skipped).
    fn log_prob(&self, x: &D::Point) -> f64 {
        let terms: Vec<f64> = self
            .components
            .iter()
            .zip(&self.log_weights)
            .filter(|(_, lw)| **lw > f64::NEG_INFINITY)
            .map(|(c, lw)| lw + c.log_prob(x))
            .collect();
        log_sum_exp(terms.iter().copied())
    }
}

fn check_n_components(n_components: usize) -> Result<()> {
    if n_components == 0 {
        return Err(GeomError::invalid("n_components", 0, "at least one component"));
    }
    Ok(())
}

/// An equally weighted mixture of `n_components` von Mises-Fisher laws on S^{d-1} with common
/// concentration `kappa` and mean directions drawn uniformly on the sphere.
///
/// Errors: `d < 2`, `n_components == 0`, `kappa` negative or not finite (each naming its argument).
pub fn random_vmf_mixture<R: Rng + ?Sized>(
    d: usize,
    n_components: usize,
    kappa: f64,
    rng: &mut R,
) -> Result<Mixture<VonMisesFisher>> {
    let sphere = Sphere::new(d)?;
    check_n_components(n_components)?;
    let components = (0..n_components)
        .map(|_| VonMisesFisher::new(sphere.sample_uniform(rng), kappa))
        .collect::<Result<Vec<_>>>()?;
    Mixture::uniform(components)
}

/// An equally weighted mixture of `n_components` wrapped normal laws on SO(3) with common scale `sigma`
/// and mean rotations drawn from the Haar law.
///
/// Errors: `n_components == 0`, `sigma` not finite or not positive (each naming its argument).
pub fn random_wrapped_normal_mixture<R: Rng + ?Sized>(
    n_components: usize,
    sigma: f64,
    rng: &mut R,
) -> Result<Mixture<WrappedNormalSo3>> {
    check_n_components(n_components)?;
    let so3 = So3::new();
    let components =
        (0..n_components).map(|_| WrappedNormalSo3::new(so3.sample_uniform(rng), sigma)).collect::<Result<Vec<_>>>()?;
    Mixture::uniform(components)
}
