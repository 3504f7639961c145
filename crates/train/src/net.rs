//! The score network: an MLP on the flattened point and Fourier features of the noise level.
//!
//! Input: `x_t / sqrt(alpha_t^2 + sigma_t^2)` flattened to `[B, D]` (unit scale at every noise level for data
//! of unit scale; the factor is 1 for VP), concatenated with `sin(omega_k ln sigma_t)` and
//! `cos(omega_k ln sigma_t)` for `k = 0..n_freqs`, `omega_k = 0.25 * 2^(k/2)`. The noise level enters through
//! `ln sigma_t` rather than `t`, so the same network is meaningful for VE and VP schedules and its
//! frequencies cover the useful range (`ln sigma` spans about 12 units for the usual schedules; the lowest
//! frequency has a period of 25 units, the spacing is a half octave).
//!
//! Building a network (either constructor) also primes glibc's allocator once per process (see
//! `prime_allocator` in the source): without it, page faults on freshly mapped tensor memory cost about
//! 40% of a CPU training step.
//!
//! Output: `[B, ..ambient]`, read by [`crate::ResidualScore`] as `sigma_t * delta(x_t, t)` (the
//! noise-scaled residual, O(1) at every noise level). The output layer is initialised to zero, so an
//! untrained model is exactly the base score (MAD) or zero (DSM).

use crate::{Result, TrainError};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// Lowest angular frequency of the Fourier features of `ln sigma`.
pub const FREQ_BASE: f64 = 0.25;
/// Ratio of successive frequencies (half an octave).
pub const FREQ_RATIO: f64 = std::f64::consts::SQRT_2;

/// The nonlinearity between hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// x * sigmoid(x).
    Silu,
    /// The exact (erf) GELU.
    Gelu,
    /// max(x, 0).
    Relu,
    /// tanh(x).
    Tanh,
}

impl Activation {
    /// Applies the nonlinearity elementwise (any shape, dtype and device; differentiable).
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Silu => x.silu(),
            Activation::Gelu => x.gelu("none"),
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// Whether dense layers with parameters like `w` can run through oneDNN's f32 inner product: `w` is f32 on
/// the CPU and this libtorch has a working oneDNN (probed once per process). oneDNN accumulates in f32 like
/// BLAS `sgemm` (the results differ only by rounding) and is about twice as fast on CPUs where the BLAS
/// takes its AVX2 path (measured on an AMD EPYC with AVX-512: 210 against 100 GFLOP/s per core at
/// 512 x 256 x 256).
pub(crate) fn onednn_f32(w: &Tensor) -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    w.device() == Device::Cpu && w.kind() == Kind::Float && *WORKS.get_or_init(probe_onednn)
}

/// Runs a tiny inner product forward and backward through oneDNN and checks the results.
fn probe_onednn() -> bool {
    if !tch::utils::has_mkldnn() {
        return false;
    }
    let _guard = tch::no_grad_guard();
    let opts = (Kind::Float, Device::Cpu);
    let (x, w, b) = (Tensor::ones([2, 3], opts), Tensor::ones([4, 3], opts), Tensor::ones([4], opts));
    let run = || -> std::result::Result<bool, tch::TchError> {
        let xm = x.f_to_mkldnn(None)?;
        let y = xm.f_mkldnn_linear(&w, Some(&b))?.f_to_dense(None, false)?;
        let g = Tensor::f_mkldnn_linear_backward_input([2, 3], &y.f_to_mkldnn(None)?, &w)?.f_to_dense(None, false)?;
        let (gw, gb) = xm.f_mkldnn_linear_backward_weights(&y.f_to_mkldnn(None)?, &w, true)?;
        Ok(y.equal(&Tensor::full([2, 4], 4.0, opts))
            && g.equal(&Tensor::full([2, 3], 16.0, opts))
            && gw.equal(&Tensor::full([4, 3], 8.0, opts))
            && gb.equal(&Tensor::full([4], 8.0, opts)))
    };
    run().unwrap_or(false)
}

/// Raises glibc's dynamic thresholds for `mmap` and heap trimming to their maximum, once per process, by
/// allocating and freeing one 31 MiB block (zeroed, so no page is touched).
///
/// A training step or a sampler step allocates and frees tensors of a few hundred kilobytes to a few
/// megabytes. With glibc's start-up thresholds (128 KiB) those blocks are mapped and unmapped, or the heap
/// top trimmed, on every step, and every first touch of their pages is a page fault: that cost 2.5 ms of a
/// 6.5 ms f32 training step of the default network (batch 512) on one core. Freeing a mapped block larger
/// than the threshold makes glibc raise it to that size (at most 32 MiB) and the trim threshold to twice
/// that, which is where a long-running Python process running PyTorch usually ends up anyway; freed memory
/// then stays in the heap for reuse. Other allocators see one large allocation and free, nothing else.
fn prime_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::hint::black_box(vec![0u8; 31 << 20])));
}

/// Hyper-parameters of [`ScoreMlp`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Units in every hidden layer (>= 1).
    pub width: i64,
    /// Number of hidden layers (>= 1); the network has `depth + 1` linear layers.
    pub depth: i64,
    /// Nonlinearity after every hidden layer.
    pub activation: Activation,
    /// Number of Fourier frequencies of `ln sigma_t` (>= 1); the input gains `2 * n_freqs` features.
    pub n_freqs: i64,
}

impl Default for MlpConfig {
    /// width 256, depth 3, SiLU, 8 frequencies.
    fn default() -> Self {
        MlpConfig { width: 256, depth: 3, activation: Activation::Silu, n_freqs: 8 }
    }
}

impl MlpConfig {
    /// Validates the fields; errors name the field (as `model.<field>`) and the allowed range.
    pub fn check(self) -> Result<Self> {
        if !(1..=1 << 20).contains(&self.width) {
            return Err(TrainError::invalid("model.width", self.width, ">= 1 and <= 2^20"));
        }
        if !(1..=1024).contains(&self.depth) {
            return Err(TrainError::invalid("model.depth", self.depth, ">= 1 and <= 1024"));
        }
        if !(1..=64).contains(&self.n_freqs) {
            return Err(TrainError::invalid("model.n_freqs", self.n_freqs, ">= 1 and <= 64"));
        }
        Ok(self)
    }

    /// The angular frequencies `omega_k = FREQ_BASE * FREQ_RATIO^k`, `k = 0..n_freqs`.
    pub fn frequencies(&self) -> Vec<f64> {
        (0..self.n_freqs).map(|k| FREQ_BASE * FREQ_RATIO.powi(k as i32)).collect()
    }

    /// `(name, shape)` of every parameter, in the order of [`ScoreMlp::named_parameters`], for points with
    /// `dim` flattened coordinates.
    pub fn parameter_shapes(&self, dim: i64) -> Vec<(String, Vec<i64>)> {
        let mut out = Vec::new();
        let mut fan_in = dim + 2 * self.n_freqs;
        for i in 0..=self.depth {
            let fan_out = if i == self.depth { dim } else { self.width };
            out.push((format!("layers.{i}.weight"), vec![fan_out, fan_in]));
            out.push((format!("layers.{i}.bias"), vec![fan_out]));
            fan_in = fan_out;
        }
        out
    }
}

/// The MLP score network (module doc): `(x_t, alpha_t, sigma_t) -> sigma_t * delta(x_t, t)`.
///
/// Its parameters live on one device in one float dtype (those of the `VarStore` it was built in, or of
/// the tensors it was built from). `ScoreMlp` is `Send` but not `Sync` (tensors are not); wrap it in
/// [`crate::ResidualScore`] to share it.
#[derive(Debug)]
pub struct ScoreMlp {
    config: MlpConfig,
    point_shape: Vec<i64>,
    dim: i64,
    /// `(weight [out, in], bias [out])` per layer.
    layers: Vec<(Tensor, Tensor)>,
    /// `[1, n_freqs]`, dtype and device of the parameters.
    freqs: Tensor,
}

fn check_point_shape(point_shape: &[i64]) -> Result<i64> {
    if point_shape.is_empty() || point_shape.iter().any(|&n| n < 1) {
        return Err(TrainError::invalid(
            "point_shape",
            format!("{point_shape:?}"),
            "a non-empty shape with every dimension >= 1",
        ));
    }
    Ok(point_shape.iter().product())
}

impl ScoreMlp {
    /// Creates the network's variables under `path` (named `layers.{i}.weight`, `layers.{i}.bias`, in the
    /// path's device and dtype) for points of shape `point_shape` (e.g. `[3]` for S^2, `[3, 3]` for SO(3)).
    ///
    /// Initialisation draws from `rng` in f64, layer by layer, weights row-major then biases: every hidden
    /// layer's weights and biases are uniform on `[-1/sqrt(fan_in), 1/sqrt(fan_in)]` (PyTorch's default);
    /// the output layer is zero (no draws). Errors naming the field on an invalid config or shape.
    pub fn new<R: Rng + ?Sized>(path: &nn::Path, config: &MlpConfig, point_shape: &[i64], rng: &mut R) -> Result<Self> {
        let config = config.check()?;
        let dim = check_point_shape(point_shape)?;
        prime_allocator();
        let mut layers = Vec::new();
        let shapes = config.parameter_shapes(dim);
        for pair in shapes.chunks(2) {
            let (wshape, bshape) = (&pair[0].1, &pair[1].1);
            let layer_path = path / "layers" / layers.len();
            let is_output = layers.len() as i64 == config.depth;
            let fan_in = wshape[1];
            let bound = 1.0 / (fan_in as f64).sqrt();
            let mut draw = |shape: &[i64]| -> Tensor {
                let n: i64 = shape.iter().product();
                let values: Vec<f64> = if is_output {
                    vec![0.0; n as usize]
                } else {
                    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
                };
                Tensor::from_slice(&values).reshape(shape)
            };
            let w = draw(wshape);
            let b = draw(bshape);
            let w = layer_path.var_copy("weight", &w);
            let b = layer_path.var_copy("bias", &b);
            layers.push((w, b));
        }
        let freqs = Self::freqs_tensor(&config, layers[0].0.kind(), layers[0].0.device());
        Ok(ScoreMlp { config, point_shape: point_shape.to_vec(), dim, layers, freqs })
    }

    /// Builds the network from named tensors (for instance read back from a safetensors file), which must
    /// be exactly the names and shapes of [`MlpConfig::parameter_shapes`], all of one float dtype on one
    /// device; the network shares their storage. Errors name the first missing, extra or mismatched tensor.
    pub fn from_tensors(config: &MlpConfig, point_shape: &[i64], named: &[(String, Tensor)]) -> Result<Self> {
        let config = config.check()?;
        let dim = check_point_shape(point_shape)?;
        prime_allocator();
        let expected = config.parameter_shapes(dim);
        for (name, _) in named {
            if !expected.iter().any(|(n, _)| n == name) {
                return Err(TrainError::CheckpointMismatch(format!(
                    "unexpected tensor `{name}` for this architecture"
                )));
            }
        }
        let mut tensors = Vec::new();
        for (name, shape) in &expected {
            let t = named
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| TrainError::CheckpointMismatch(format!("tensor `{name}` is missing")))?;
            if t.size() != *shape {
                return Err(TrainError::CheckpointMismatch(format!(
                    "tensor `{name}` has shape {:?}, the architecture needs {shape:?}",
                    t.size()
                )));
            }
            if !matches!(t.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
                return Err(TrainError::CheckpointMismatch(format!(
                    "tensor `{name}` has dtype {:?}, a float dtype is needed",
                    t.kind()
                )));
            }
            tensors.push(t.detach());
        }
        let (kind, device) = (tensors[0].kind(), tensors[0].device());
        if let Some(((name, _), t)) =
            expected.iter().zip(&tensors).find(|(_, t)| t.kind() != kind || t.device() != device)
        {
            return Err(TrainError::CheckpointMismatch(format!(
                "tensor `{name}` is {:?} on {:?}, the others {kind:?} on {device:?}",
                t.kind(),
                t.device()
            )));
        }
        let mut it = tensors.into_iter();
        let mut layers = Vec::new();
        while let (Some(w), Some(b)) = (it.next(), it.next()) {
            layers.push((w, b));
        }
        let freqs = Self::freqs_tensor(&config, kind, device);
        Ok(ScoreMlp { config, point_shape: point_shape.to_vec(), dim, layers, freqs })
    }

    fn freqs_tensor(config: &MlpConfig, kind: Kind, device: Device) -> Tensor {
        Tensor::from_slice(&config.frequencies()).reshape([1, config.n_freqs]).to_kind(kind).to_device(device)
    }

    /// The configuration.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// The shape of one point, `[..ambient]`.
    pub fn point_shape(&self) -> &[i64] {
        &self.point_shape
    }

    /// The dtype of the parameters.
    pub fn kind(&self) -> Kind {
        self.layers[0].0.kind()
    }

    /// The device of the parameters.
    pub fn device(&self) -> Device {
        self.layers[0].0.device()
    }

    /// The total number of scalar parameters.
    pub fn n_params(&self) -> i64 {
        self.layers.iter().map(|(w, b)| w.numel() as i64 + b.numel() as i64).sum()
    }

    /// Shallow handles to the parameters (sharing storage, keeping `requires_grad`), named
    /// `layers.{i}.weight` (`[out, in]`) and `layers.{i}.bias` (`[out]`), input layer first.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.layers.len());
        for (i, (w, b)) in self.layers.iter().enumerate() {
            out.push((format!("layers.{i}.weight"), w.shallow_clone()));
            out.push((format!("layers.{i}.bias"), b.shallow_clone()));
        }
        out
    }

    /// An independent copy: detached parameters in new storage, same dtype and device.
    pub fn deep_copy(&self) -> Self {
        let layers = self.layers.iter().map(|(w, b)| (w.detach().copy(), b.detach().copy())).collect();
        ScoreMlp {
            config: self.config,
            point_shape: self.point_shape.clone(),
            dim: self.dim,
            layers,
            freqs: self.freqs.copy(),
        }
    }

    /// The input features `[x / sqrt(alpha^2 + sigma^2), sin(omega ln sigma), cos(omega ln sigma)]`.
    ///
    /// `x: [B, ..point_shape]`, `alpha, sigma: [B]` (sigma > 0), all in the parameters' dtype and on their
    /// device -> `[B, D + 2 n_freqs]`, same dtype and device, `D` the number of coordinates of a point.
    /// Panics naming the argument on a shape mismatch (a bug in the caller).
    pub fn features(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        let size = x.size();
        assert!(
            size.len() == self.point_shape.len() + 1 && size[1..] == self.point_shape[..],
            "ScoreMlp: argument `x` has shape {size:?}, expected [B, {:?}]",
            self.point_shape
        );
        let b = size[0];
        assert_eq!(alpha.size(), [b], "ScoreMlp: argument `alpha` must have shape [B] = [{b}]");
        assert_eq!(sigma.size(), [b], "ScoreMlp: argument `sigma` must have shape [B] = [{b}]");
        let a = alpha.reshape([b, 1]);
        let s = sigma.reshape([b, 1]);
        let c_in = (a.square() + s.square()).rsqrt();
        let phase = s.log() * &self.freqs;
        Tensor::cat(&[x.reshape([b, self.dim]) * c_in, phase.sin(), phase.cos()], 1)
    }

    /// `(weight [out, in], bias [out])` of every layer, input layer first.
    pub(crate) fn layers(&self) -> &[(Tensor, Tensor)] {
        &self.layers
    }

    /// The network output `sigma_t * delta(x_t, t)` (module doc).
    ///
    /// `x: [B, ..point_shape]`, `alpha, sigma: [B]` (sigma > 0), all in the parameters' dtype and on their
    /// device -> `[B, ..point_shape]`, same dtype and device; differentiable in the inputs and parameters.
    /// Panics naming the argument on a shape mismatch (a bug in the caller).
    pub fn forward(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        let mut h = self.features(x, alpha, sigma);
        let last = self.layers.len() - 1;
        for (i, (w, bias)) in self.layers.iter().enumerate() {
            h = bias.addmm(&h, &w.tr());
            if i < last {
                h = self.config.activation.apply(&h);
            }
        }
        h.reshape(x.size())
    }
}
