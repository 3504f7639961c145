//! Forward-mode differentiation by hand: a value together with `k` tangents (Jacobian-vector products).
//!
//! A [`Dual`] holds a primal tensor `v` of shape `S` and, optionally, tangents `t` of shape `[k, ..S]`:
//! the directional derivatives of `v` along `k` input directions at once. Every operation below maps
//! `(v, t)` to `(f(v), Df(v) t)` with the derivative written out, so that one forward pass through a layer
//! gives its output and `k` Jacobian-vector products without any backward pass. All the ops are ordinary
//! differentiable tch ops, so autograd can still differentiate the tangents with respect to the weights
//! (training through `log det(J^T J)`).
//!
//! Reductions and indexing act on trailing dimensions only (negative `dim`), so that the leading tangent
//! dimension broadcasts. A missing tangent (`None`) stands for zero: constants cost nothing.

use tch::Tensor;

/// A primal value and optional tangents (module doc). Shapes: `v` is `S`, `t` is `[k, ..S]`.
#[derive(Debug)]
pub struct Dual {
    /// The value.
    pub v: Tensor,
    /// The tangents, `[k, ..v.shape]`; `None` means all zero.
    pub t: Option<Tensor>,
}

fn add_opt(a: Option<Tensor>, b: Option<Tensor>) -> Option<Tensor> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Dual {
    /// A value with tangents `t` (`[k, ..v.shape]`).
    pub fn new(v: Tensor, t: Option<Tensor>) -> Dual {
        Dual { v, t }
    }

    /// A constant: a value without tangents.
    pub fn constant(v: Tensor) -> Dual {
        Dual { v, t: None }
    }

    /// Applies `f` to the value and `df` to the tangents (any linear map that commutes with the leading
    /// tangent dimension).
    fn map(&self, v: Tensor, df: impl FnOnce(&Tensor) -> Tensor) -> Dual {
        Dual { v, t: self.t.as_ref().map(df) }
    }

    /// Shallow copy (shares storage).
    pub fn shallow_clone(&self) -> Dual {
        Dual { v: self.v.shallow_clone(), t: self.t.as_ref().map(Tensor::shallow_clone) }
    }

    /// Elementwise sum (broadcasting).
    pub fn add(&self, o: &Dual) -> Dual {
        Dual { v: &self.v + &o.v, t: add_opt(self.t.as_ref().map(|t| t * 1), o.t.as_ref().map(|t| t * 1)) }
    }

    /// Elementwise difference (broadcasting).
    pub fn sub(&self, o: &Dual) -> Dual {
        Dual { v: &self.v - &o.v, t: add_opt(self.t.as_ref().map(|t| t * 1), o.t.as_ref().map(|t| -t)) }
    }

    /// Elementwise product (broadcasting): `(a b)' = a' b + a b'`.
    pub fn mul(&self, o: &Dual) -> Dual {
        Dual { v: &self.v * &o.v, t: add_opt(self.t.as_ref().map(|t| t * &o.v), o.t.as_ref().map(|t| t * &self.v)) }
    }

    /// Elementwise quotient (broadcasting): `(a / b)' = a' / b - a b' / b^2`.
    pub fn div(&self, o: &Dual) -> Dual {
        let v = &self.v / &o.v;
        let t = add_opt(self.t.as_ref().map(|t| t / &o.v), o.t.as_ref().map(|t| -(t * &v) / &o.v));
        Dual { v, t }
    }

    /// Multiplication by a scalar.
    pub fn scale(&self, s: f64) -> Dual {
        self.map(&self.v * s, |t| t * s)
    }

    /// Adds a scalar.
    pub fn add_scalar(&self, s: f64) -> Dual {
        self.map(&self.v + s, |t| t * 1)
    }

    /// `1 - x`.
    pub fn one_minus(&self) -> Dual {
        self.map(-&self.v + 1.0, |t| -t)
    }

    /// Elementwise square.
    pub fn square(&self) -> Dual {
        self.map(self.v.square(), |t| t * (&self.v * 2.0))
    }

    /// `relu`, with derivative 0 at 0.
    pub fn relu(&self) -> Dual {
        let mask = self.v.gt(0.0).to_kind(self.v.kind());
        self.map(self.v.relu(), |t| t * &mask)
    }

    /// `softplus(x) = log(1 + e^x)`, derivative `sigmoid(x)`.
    pub fn softplus(&self) -> Dual {
        self.map(self.v.softplus(), |t| t * self.v.sigmoid())
    }

    /// Softmax over the last dimension: `ds = s * (t - <s, t>)`.
    pub fn softmax_last(&self) -> Dual {
        let s = self.v.softmax(-1, self.v.kind());
        let t = self.t.as_ref().map(|t| {
            let st = (t * &s).sum_dim_intlist(-1, true, self.v.kind());
            (t - st) * &s
        });
        Dual { v: s, t }
    }

    /// Cumulative sum over the last dimension.
    pub fn cumsum_last(&self) -> Dual {
        self.map(self.v.cumsum(-1, self.v.kind()), |t| t.cumsum(-1, t.kind()))
    }

    /// Pads the last dimension with `left` and `right` copies of the constant `value`.
    pub fn pad_last(&self, left: i64, right: i64, value: f64) -> Dual {
        self.map(self.v.pad([left, right], "constant", value), |t| t.constant_pad_nd([left, right]))
    }

    /// `len` entries of the last dimension from `start`.
    pub fn narrow_last(&self, start: i64, len: i64) -> Dual {
        let d = self.v.dim() as i64 - 1;
        let td = d + 1;
        self.map(self.v.narrow(d, start, len), |t| t.narrow(td, start, len))
    }

    /// Gathers along the last dimension with `index` (a primal-only Int64 tensor shaped like the result).
    pub fn gather_last(&self, index: &Tensor) -> Dual {
        let v = self.v.gather(-1, index, false);
        let t = self.t.as_ref().map(|t| {
            let k = t.size()[0];
            let mut shape = vec![k];
            shape.extend(index.size());
            t.gather(-1, &index.unsqueeze(0).expand(shape.as_slice(), false), false)
        });
        Dual { v, t }
    }

    /// Selects entries of the last dimension by an Int64 index vector.
    pub fn select_last(&self, index: &Tensor) -> Dual {
        self.map(self.v.index_select(-1, index), |t| t.index_select(-1, index))
    }

    /// Writes `src` into the entries `index` of the last dimension (out of place).
    pub fn copy_into_last(&self, index: &Tensor, src: &Dual) -> Dual {
        let d = self.v.dim() as i64 - 1;
        let v = self.v.index_copy(d, index, &src.v);
        let t = match (&self.t, &src.t) {
            (None, None) => None,
            (a, b) => {
                let k = a.as_ref().or(b.as_ref()).map(|t| t.size()[0]).unwrap_or(1);
                let a = a.as_ref().map(|t| t * 1).unwrap_or_else(|| expand_zero(&self.v, k));
                let b = b.as_ref().map(|t| t * 1).unwrap_or_else(|| expand_zero(&src.v, k));
                Some(a.index_copy(d + 1, index, &b))
            }
        };
        Dual { v, t }
    }

    /// Affine map on the last dimension, `x W^T + b` with `w` of shape `[out, in]` and `b` of `[out]`.
    pub fn linear(&self, w: &Tensor, b: Option<&Tensor>) -> Dual {
        let mut v = self.v.matmul(&w.tr());
        if let Some(b) = b {
            v += b;
        }
        self.map(v, |t| t.matmul(&w.tr()))
    }

    /// Reshapes the value to `shape` and the tangents to `[k, ..shape]`.
    pub fn reshape(&self, shape: &[i64]) -> Dual {
        self.map(self.v.reshape(shape), |t| {
            let mut s = vec![t.size()[0]];
            s.extend_from_slice(shape);
            t.reshape(s.as_slice())
        })
    }

    /// `where(cond, self, other)` elementwise; `cond` is a primal-only boolean tensor.
    pub fn select_where(&self, cond: &Tensor, other: &Dual) -> Dual {
        let v = self.v.where_self(cond, &other.v);
        let t = match (&self.t, &other.t) {
            (None, None) => None,
            (a, b) => {
                let k = a.as_ref().or(b.as_ref()).map(|t| t.size()[0]).unwrap_or(1);
                let a = a.as_ref().map(|t| t * 1).unwrap_or_else(|| expand_zero(&self.v, k));
                let b = b.as_ref().map(|t| t * 1).unwrap_or_else(|| expand_zero(&other.v, k));
                Some(a.where_self(cond, &b))
            }
        };
        Dual { v, t }
    }
}

/// Zero tangents `[k, ..v.shape]` for a value `v`.
fn expand_zero(v: &Tensor, k: i64) -> Tensor {
    let mut shape = vec![k];
    shape.extend(v.size());
    Tensor::zeros(shape.as_slice(), (v.kind(), v.device()))
}
