//! Operator-informed score matching (MATH.md section 6): closed-form spectral score estimators built from
//! the eigenfunctions of the forward process's generator, to be used as the baseline of a score model whose
//! network learns only the residual (OISM = MAD training with one of these as the base score).
//!
//! - [`hermite::HermiteScore`]: the Euclidean Ornstein-Uhlenbeck process (any VP or VE schedule through an
//!   exact rescaling), Hermite polynomials per coordinate, fitted from the sample means of the Hermite
//!   polynomials of the data (optionally shrunk toward 0). It implements [`crate::BaseScore`], so it plugs into
//!   `train` as a `TensorBase` for `Objective::Mad` training.
//! - [`sphere::SphereSpectralScore`]: Brownian motion on S^2 (generator Delta), the spherical-harmonic
//!   smoother of [`crate::smoother::spectral`] with optional shrinkage of its coefficients; an intrinsic score
//!   at heat time t.
//!
//! Every estimator keeps only the sample means of the basis functions: one pass over the data, then each
//! query costs O(degree) per coordinate (Hermite) or O(L^2) (S^2) whatever the number of data points.
//!
//! OISM training (Euclidean data `[N, D]`, VP or VE schedule): pass
//! `Some(Arc::new(HermiteScore::fit(&data, degree, shrinkage)?))` as the base of `train::Trainer::new` with
//! `Objective::Mad`; the network then learns only the residual sigma_t (s - s_hermite). Compare with
//! `Objective::Dsm` (no base) at the same network, data, steps and seed. For sampling without a network,
//! [`crate::base::ScheduledBase`] turns the estimator into a [`crate::Score`] along a schedule.
//!
//! ```
//! use scores::oism::hermite::HermiteScore;
//! use scores::BaseScore;
//! use tch::Tensor;
//!
//! // Data from N(0.5, 0.8^2) in 1-D; a VP noise level alpha = 0.6, sigma = 0.8.
//! tch::manual_seed(0);
//! let data = Tensor::randn([4000, 1], (tch::Kind::Double, tch::Device::Cpu)) * 0.8 + 0.5;
//! let est = HermiteScore::fit(&data, 4, None).unwrap();
//! let x = Tensor::from_slice(&[0.0f64, 1.0]).view([2, 1]);
//! let s = est.base_score_t(&x, &Tensor::from_slice(&[0.6f64, 0.6]), &Tensor::from_slice(&[0.8f64, 0.8]));
//! // The exact score of the noised law N(0.3, 0.36 * 0.64 + 0.64) is -(x - 0.3) / 0.8704.
//! for (i, xi) in [0.0, 1.0].iter().enumerate() {
//!     assert!((s.double_value(&[i as i64, 0]) + (xi - 0.3) / 0.8704).abs() < 0.05);
//! }
//! ```

pub mod hermite;
pub mod sphere;
pub mod sphere_base;
