//! The [`Transform`] trait and [`Flow`], a composition of transforms.
//!
//! Direction convention: `forward` is the *generative* direction (latent `z` to data `x`), `inverse` the
//! encoding direction. Both return the log-absolute-determinant of their own Jacobian, so
//! `forward(z).1 = -inverse(x).1` at `x = forward(z).0`.
//!
//! [`Transform::forward_jvp`] pushes `k` tangent vectors through the forward map along with the value
//! (forward-mode differentiation, see [`crate::dual`]); [`Transform::jacobian`] uses it with the `dim`
//! basis vectors. The decoder Jacobian of a model (`d x n`) is `n` such products in one pass.

use tch::Tensor;

/// An invertible map of `R^dim` with tractable log-determinant (module doc for the direction).
///
/// Shapes: points are `[B, dim]`, log-determinants `[B]`, tangents `[k, B, dim]`; dtype and device follow
/// the layer's parameters (f32 or f64, CPU or CUDA).
pub trait Transform: std::fmt::Debug {
    /// The dimension the transform acts on.
    fn dim(&self) -> i64;

    /// `x = T(z)` and `log|det dT/dz|` per row.
    fn forward(&self, z: &Tensor) -> (Tensor, Tensor);

    /// `z = T^{-1}(x)` and `log|det dT^{-1}/dx|` per row.
    fn inverse(&self, x: &Tensor) -> (Tensor, Tensor);

    /// `x = T(z)`, `log|det dT/dz|` and the pushed tangents `dT/dz · t` (`t` is `[k, B, dim]`).
    fn forward_jvp(&self, z: &Tensor, t: &Tensor) -> (Tensor, Tensor, Tensor);

    /// The full Jacobian `dT/dz`, `[B, dim, dim]` with entry `[b, i, j] = dx_i / dz_j`, from `dim`
    /// forward-mode products.
    fn jacobian(&self, z: &Tensor) -> Tensor {
        let b = z.size()[0];
        let d = self.dim();
        let eye = Tensor::eye(d, (z.kind(), z.device()));
        let t = eye.unsqueeze(1).expand([d, b, d], false);
        let (_, _, jt) = self.forward_jvp(z, &t);
        jt.permute([1, 2, 0])
    }
}

/// A composition of transforms, applied in order by `forward` (first element first) and in reverse order
/// by `inverse`.
#[derive(Debug, Default)]
pub struct Flow {
    layers: Vec<Box<dyn Transform>>,
    dim: i64,
}

impl Flow {
    /// An empty flow (the identity) on `R^dim`.
    pub fn new(dim: i64) -> Flow {
        Flow { layers: Vec::new(), dim }
    }

    /// Appends a layer (applied after the existing ones in the forward direction).
    ///
    /// # Panics
    /// If the layer's dimension differs from the flow's.
    pub fn push(&mut self, layer: Box<dyn Transform>) {
        assert_eq!(layer.dim(), self.dim, "layer dimension differs from the flow's");
        self.layers.push(layer);
    }

    /// The layers in forward order.
    pub fn layers(&self) -> &[Box<dyn Transform>] {
        &self.layers
    }
}

fn zero_logdet(x: &Tensor) -> Tensor {
    Tensor::zeros([x.size()[0]], (x.kind(), x.device()))
}

impl Transform for Flow {
    fn dim(&self) -> i64 {
        self.dim
    }

    fn forward(&self, z: &Tensor) -> (Tensor, Tensor) {
        let mut x = z.shallow_clone();
        let mut ld = zero_logdet(z);
        for l in &self.layers {
            let (y, d) = l.forward(&x);
            x = y;
            ld += d;
        }
        (x, ld)
    }

    fn inverse(&self, x: &Tensor) -> (Tensor, Tensor) {
        let mut z = x.shallow_clone();
        let mut ld = zero_logdet(x);
        for l in self.layers.iter().rev() {
            let (y, d) = l.inverse(&z);
            z = y;
            ld += d;
        }
        (z, ld)
    }

    fn forward_jvp(&self, z: &Tensor, t: &Tensor) -> (Tensor, Tensor, Tensor) {
        let mut x = z.shallow_clone();
        let mut tx = t.shallow_clone();
        let mut ld = zero_logdet(z);
        for l in &self.layers {
            let (y, d, ty) = l.forward_jvp(&x, &tx);
            x = y;
            tx = ty;
            ld += d;
        }
        (x, ld, tx)
    }
}
