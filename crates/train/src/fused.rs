//! The trainer's forward and backward pass of the loss, written by hand for the MLP.
//!
//! Same numbers as [`crate::residual_loss`] followed by autograd (a test compares them to 1e-10), with
//! fewer kernels: no autograd graph, the loss gradient formed in one expression, and the weight and bias
//! gradients written straight into the flat gradient buffer (`mm_out`, `sum_out`) instead of being
//! allocated and then copied.
//!
//! Unlike the optimiser ([`crate::optim`]), the elementwise kernels here run whole: the nonlinearity and
//! its derivative are compute-bound and do gain from a second thread (measured on an idle 2-core machine:
//! about 15% more steps per second than with serial chunks).

use crate::loss::noised;
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
    // Forward: inputs[i] enters layer i, pre[i] is layer i's pre-activation (hidden layers only).
    let mut inputs = vec![net.features(&n.x_t, &n.alpha, &n.sigma)];
    let mut pre = Vec::with_capacity(last);
    for (w, bias) in &layers[..last] {
        let z = bias.addmm(&inputs[inputs.len() - 1], &w.tr());
        let a = z.empty_like();
        act_into(act, &z, &a);
        pre.push(z);
        inputs.push(a);
    }
    let (w_out, b_out) = &layers[last];
    let out = b_out.addmm(&inputs[last], &w_out.tr());
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
        let _ = g.tr().mm_out(&gw, &inputs[i]);
        let _ = g.sum_intlist_out(&gb, [0i64].as_slice(), false, None);
        if i > 0 {
            let ga = g.mm(w);
            let gz = ga.empty_like();
            act_backward_into(act, &ga, &pre[i - 1], &inputs[i], &gz);
            g = gz;
        }
    }
    loss.double_value(&[])
}
