//! The trainer's forward and backward pass of the loss, written by hand for the MLP.
//!
//! Same numbers as [`crate::residual_loss`] followed by autograd (a test compares them to 1e-10), with
//! fewer kernels: no autograd graph, the loss gradient formed in one expression, and the weight and bias
//! gradients written straight into the flat gradient buffer (`mm_out`, `sum_out`) instead of being
//! allocated and then copied.
//!
//! The matrix products of f32 networks on the CPU run through oneDNN's inner product (forward, gradient of
//! the input, gradients of weight and bias), which is about twice as fast as the BLAS `sgemm` behind `addmm`
//! on CPUs where that BLAS takes its AVX2 path, with the same f32 accumulation; activations and gradients
//! are converted to oneDNN's layout and back around each product (a copy of `[B, width]`, a few percent
//! of the product). Other dtypes and devices use `addmm`/`mm`.
//!
//! Unlike the optimiser ([`crate::optim`]), the elementwise kernels here run whole: the nonlinearity and
//! its derivative are compute-bound and do gain from a second thread (measured on an idle 2-core machine:
//! about 15% more steps per second than with serial chunks).

use crate::loss::noised;
use crate::net::onednn_f32;
use crate::{Activation, LossBatch, ScoreMlp, TensorBase, Weighting};
use scores::Schedule;
use tch::Tensor;

/// `a = act(z)`, elementwise, written into `a` (same shape).
fn act_into(act: Activation, z: &Tensor, a: &Tensor) {
    let _ = match act {
        Activation::Silu => z.silu_out(a),
        Activation::Gelu => z.gelu_out(a, "none"),
        Activation::Relu => z.relu_out(a),
        Activation::Tanh => z.tanh_out(a),
    };
}

/// `gz = act'(z) * ga`, elementwise, written into `gz` (`a = act(z)` is given for tanh).
fn act_backward_into(act: Activation, ga: &Tensor, z: &Tensor, a: &Tensor, gz: &Tensor) {
    let _ = match act {
        Activation::Silu => z.silu_backward_grad_input(gz, ga),
        Activation::Gelu => z.gelu_backward_grad_input(gz, ga, "none"),
        Activation::Relu => z.threshold_backward_grad_input(gz, ga, 0.0),
        Activation::Tanh => Tensor::tanh_backward_grad_input(gz, ga, a),
    };
}

/// The mean loss on `batch` ([`crate::residual_loss`], same arguments) and its gradient with respect to the
/// network's parameters, written into `grad`: `[P]` in the network's dtype and on its device, laid out as
/// [`ScoreMlp::named_parameters`] flattened and concatenated (the layout of [`crate::FlatParams`]).
///
/// Returns the loss as an f64. Nothing is differentiable (it runs under `no_grad`); the network's
/// parameters are only read. Panics on a shape mismatch (a bug in the caller).
pub fn loss_and_grad(
    net: &ScoreMlp,
    base: Option<&dyn TensorBase>,
    schedule: &Schedule,
    weighting: Weighting,
    batch: &LossBatch,
    grad: &mut Tensor,
) -> f64 {
    assert_eq!(grad.size(), [net.n_params()], "loss_and_grad: argument `grad` must have shape [P]");
    let _guard = tch::no_grad_guard();
    let n = noised(base, schedule, batch);
    let b = n.x_t.size()[0];
    let act = net.config().activation;
    let layers = net.layers();
    let last = layers.len() - 1;
    let gemm = Gemm::for_params(&layers[0].0);
    // Forward: inputs[i] enters layer i (in the GEMM backend's layout), pre[i] is layer i's pre-activation
    // and acts[i] its activation (hidden layers only, dense).
    let mut inputs = vec![gemm.to_input(&net.features(&n.x_t, &n.alpha, &n.sigma))];
    let mut pre = Vec::with_capacity(last);
    let mut acts = Vec::with_capacity(last);
    for (w, bias) in &layers[..last] {
        let z = gemm.linear(&inputs[inputs.len() - 1], w, bias);
        let a = z.empty_like();
        act_into(act, &z, &a);
        inputs.push(gemm.to_input(&a));
        pre.push(z);
        acts.push(a);
    }
    let (w_out, b_out) = &layers[last];
    let out = gemm.linear(&inputs[last], w_out, b_out);
    let r = out - n.target.reshape([b, -1]);
    let per_sample = r.square().sum_dim_intlist(1, false, None);
    let weights = match weighting {
        Weighting::SigmaSquared => None,
        Weighting::Likelihood => Some(schedule.g2_t(&batch.t) / n.sigma.square()),
    };
    let loss = match &weights {
        None => per_sample.mean(None),
        Some(w) => (per_sample * w).mean(None),
    };
    let mut g = match &weights {
        None => r * (2.0 / b as f64),
        Some(w) => r * w.unsqueeze(1) * (2.0 / b as f64),
    };
    // Backward, output layer first, into views of the flat gradient.
    let mut offsets = Vec::with_capacity(layers.len());
    let mut off = 0;
    for (w, bias) in layers {
        offsets.push(off);
        off += w.numel() as i64 + bias.numel() as i64;
    }
    for i in (0..=last).rev() {
        let (w, bias) = &layers[i];
        let (nw, nb) = (w.numel() as i64, bias.numel() as i64);
        let gw = grad.narrow(0, offsets[i], nw).view(&w.size()[..]);
        let gb = grad.narrow(0, offsets[i] + nw, nb);
        let g_in = gemm.to_input(&g);
        gemm.weight_grads_into(&g, &g_in, &inputs[i], w, &gw, &gb);
        if i > 0 {
            let ga = gemm.input_grad(&g, &g_in, w, &acts[i - 1]);
            let gz = ga.empty_like();
            act_backward_into(act, &ga, &pre[i - 1], &acts[i - 1], &gz);
            g = gz;
        }
    }
    loss.double_value(&[])
}

/// Which kernels run the dense layers: oneDNN's inner product for f32 on the CPU (where it is about twice
/// as fast as the BLAS `sgemm` that `addmm` calls on this hardware, and as exact: plain f32 accumulation),
/// else `addmm`/`mm` (every other dtype and device, and libtorch builds without oneDNN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gemm {
    Blas,
    OneDnn,
}

impl Gemm {
    /// The backend for parameters like `w`.
    fn for_params(w: &Tensor) -> Self {
        if onednn_f32(w) {
            Gemm::OneDnn
        } else {
            Gemm::Blas
        }
    }

    /// A layer input `[B, in]` (dense) in the layout `linear` and the weight gradient read.
    fn to_input(self, x: &Tensor) -> Tensor {
        match self {
            Gemm::Blas => x.shallow_clone(),
            Gemm::OneDnn => x.contiguous().g_to_mkldnn(None),
        }
    }

    /// `x w^T + b` for an input from `to_input`, dense `[B, out]`.
    fn linear(self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        match self {
            Gemm::Blas => b.addmm(x, &w.tr()),
            Gemm::OneDnn => x.mkldnn_linear(w, Some(b)).to_dense(None, false),
        }
    }

    /// Writes `g^T x` into `gw` and the column sums of `g` into `gb`; `g: [B, out]` dense, `g_in` the same
    /// from `to_input`, `x` the layer input from `to_input`.
    fn weight_grads_into(self, g: &Tensor, g_in: &Tensor, x: &Tensor, w: &Tensor, gw: &Tensor, gb: &Tensor) {
        match self {
            Gemm::Blas => {
                let _ = g.tr().mm_out(gw, x);
                let _ = g.sum_intlist_out(gb, [0i64].as_slice(), false, None);
            }
            Gemm::OneDnn => {
                let (dw, db) = x.mkldnn_linear_backward_weights(g_in, w, true);
                let (mut gw, mut gb) = (gw.shallow_clone(), gb.shallow_clone());
                gw.copy_(&dw);
                gb.copy_(&db);
            }
        }
    }

    /// `g w`, dense `[B, in]`, shaped like `like`.
    fn input_grad(self, g: &Tensor, g_in: &Tensor, w: &Tensor, like: &Tensor) -> Tensor {
        match self {
            Gemm::Blas => g.mm(w),
            Gemm::OneDnn => Tensor::mkldnn_linear_backward_input(like.size(), g_in, w).to_dense(None, false),
        }
    }
}
