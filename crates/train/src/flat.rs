//! All parameters of a network in one contiguous buffer, so that the optimiser, clipping and the EMA run
//! a few kernels over one tensor instead of a few per parameter tensor.

use crate::optim::chunks;
use crate::{Result, TrainError};
use tch::Tensor;

/// The parameters of a network re-pointed into one contiguous 1-d buffer `[P]` (in the order given at
/// construction), with a matching flat gradient buffer.
///
/// The network's variables keep their identity (leaves that require grad) but their storage becomes a
/// view of the buffer, so updating the buffer in place updates the network. Update it only between a
/// backward pass and the next forward pass (autograd does not see the in-place changes of the buffer).
#[derive(Debug)]
pub struct FlatParams {
    names: Vec<String>,
    shapes: Vec<Vec<i64>>,
    offsets: Vec<i64>,
    vars: Vec<Tensor>,
    buffer: Tensor,
    grad: Tensor,
}

impl FlatParams {
    /// Gathers `named` parameters (all of one dtype and device, non-empty) into a new buffer and re-points
    /// every variable into it (values unchanged).
    pub fn new(named: Vec<(String, Tensor)>) -> Self {
        assert!(!named.is_empty(), "FlatParams::new: no parameters");
        let _guard = tch::no_grad_guard();
        let flat: Vec<Tensor> = named.iter().map(|(_, t)| t.detach().reshape([-1])).collect();
        let buffer = Tensor::cat(&flat, 0);
        let mut offsets = Vec::with_capacity(named.len());
        let mut shapes = Vec::with_capacity(named.len());
        let mut names = Vec::with_capacity(named.len());
        let mut vars = Vec::with_capacity(named.len());
        let mut off = 0;
        for (name, mut var) in named {
            let shape = var.size();
            let n = var.numel() as i64;
            var.set_data(&buffer.narrow(0, off, n).view(&shape[..]));
            offsets.push(off);
            shapes.push(shape);
            names.push(name);
            vars.push(var);
            off += n;
        }
        let grad = buffer.zeros_like();
        FlatParams { names, shapes, offsets, vars, buffer, grad }
    }

    /// The number of scalar parameters P.
    pub fn len(&self) -> i64 {
        self.buffer.numel() as i64
    }

    /// Always false (a buffer holds at least one parameter).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parameter names, in buffer order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The parameter buffer `[P]` (dtype and device of the parameters).
    pub fn buffer(&self) -> &Tensor {
        &self.buffer
    }

    /// The parameter buffer, for in-place updates.
    pub fn buffer_mut(&mut self) -> &mut Tensor {
        &mut self.buffer
    }

    /// The gradient buffer `[P]` as last filled by [`FlatParams::backward`].
    pub fn grad(&self) -> &Tensor {
        &self.grad
    }

    /// The gradient buffer, for [`crate::loss_and_grad`] to fill and for in-place clipping.
    pub fn grad_mut(&mut self) -> &mut Tensor {
        &mut self.grad
    }

    /// Back-propagates the scalar `loss` to the parameters and writes the gradient into the flat gradient
    /// buffer (returned for in-place clipping). The parameters' `.grad` fields are not touched.
    pub fn backward(&mut self, loss: &Tensor) -> &mut Tensor {
        let grads = Tensor::run_backward(&[loss], &self.vars, false, false);
        let _guard = tch::no_grad_guard();
        // Serial chunked copies on the CPU (see `crate::optim`), one concatenation elsewhere.
        if self.grad.device() == tch::Device::Cpu {
            for (g, &off) in grads.iter().zip(&self.offsets) {
                let dst = self.grad.narrow(0, off, g.numel() as i64);
                for (mut d, s) in chunks(&dst).into_iter().zip(chunks(&g.reshape([-1]))) {
                    d.copy_(&s);
                }
            }
        } else {
            let flat: Vec<Tensor> = grads.iter().map(|g| g.reshape([-1])).collect();
            let _ = Tensor::cat_out(&self.grad, &flat, 0);
        }
        &mut self.grad
    }

    /// Named views `(name, [..shape])` into a flat tensor `[P]` laid out like the buffer (the buffer
    /// itself, the EMA, or an optimiser moment).
    pub fn split(&self, flat: &Tensor) -> Vec<(String, Tensor)> {
        assert_eq!(flat.size(), [self.len()], "FlatParams::split: argument `flat` must have shape [P]");
        self.names
            .iter()
            .zip(&self.shapes)
            .zip(&self.offsets)
            .map(|((name, shape), &off)| {
                let n: i64 = shape.iter().product();
                (name.clone(), flat.narrow(0, off, n).view(&shape[..]))
            })
            .collect()
    }

    /// The inverse of [`FlatParams::split`]: a new flat tensor `[P]` in the buffer's dtype and on its device
    /// from tensors named `prefix + name` in `named` (any dtype and device). Errors name the first missing
    /// or mis-shaped tensor.
    pub fn gather(&self, named: &[(String, Tensor)], prefix: &str) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(self.names.len());
        for (name, shape) in self.names.iter().zip(&self.shapes) {
            let key = format!("{prefix}{name}");
            let t = named
                .iter()
                .find(|(n, _)| *n == key)
                .map(|(_, t)| t)
                .ok_or_else(|| TrainError::CheckpointMismatch(format!("tensor `{key}` is missing")))?;
            if t.size() != *shape {
                return Err(TrainError::CheckpointMismatch(format!(
                    "tensor `{key}` has shape {:?}, this architecture needs {shape:?}",
                    t.size()
                )));
            }
            parts.push(t.detach().reshape([-1]).to_kind(self.buffer.kind()).to_device(self.buffer.device()));
        }
        Ok(Tensor::cat(&parts, 0))
    }
}
