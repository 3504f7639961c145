//! Rational-quadratic spline couplings with residual conditioners.

use crate::dual::Dual;
use crate::nets::ResidualNet;
use crate::spline::{rq_spline, rq_spline_inverse, SplineConfig};
use crate::transform::Transform;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Tensor};

/// Where a coupling's spline parameters come from.
#[derive(Debug)]
enum Conditioner {
    /// A residual network of the untouched coordinates.
    Net(ResidualNet),
    /// Learnt constants (`[m * (3K - 1)]`), for a flow on `R^1` where no coordinate is left to condition on.
    Constant(Tensor),
}

/// `x_A = z_A`, `x_B = s(z_B; theta(z_A))`: a monotone spline ([`crate::spline`]) on the coordinates `B`
/// whose parameters are a residual network of the coordinates `A`.
///
/// `log|det|` is the sum of the spline's log-derivatives. On `R^1` (`A` empty) the parameters are learnt
/// constants. At initialisation the conditioner outputs zero and the coupling is the identity.
#[derive(Debug)]
pub struct RqCoupling {
    dim: i64,
    identity_idx: Tensor,
    transform_idx: Tensor,
    conditioner: Conditioner,
    spline: SplineConfig,
    /// The conditioner's width `H`: widths and heights are divided by `sqrt(H)` (as in nflows).
    scale: f64,
}

impl RqCoupling {
    /// A coupling on `R^dim` that transforms the coordinates `i` with `i % 2 != parity % 2` (all of them
    /// on `R^1`), conditioned on the others by a residual network of width `hidden` with `blocks` blocks.
    pub fn new(
        p: &nn::Path,
        dim: i64,
        parity: usize,
        hidden: i64,
        blocks: usize,
        spline: SplineConfig,
        rng: &mut ChaCha8Rng,
    ) -> RqCoupling {
        let (ids, trs): (Vec<i64>, Vec<i64>) =
            if dim == 1 { (vec![], vec![0]) } else { (0..dim).partition(|i| (*i as usize) % 2 == parity % 2) };
        let out = trs.len() as i64 * spline.params_per_dim();
        let conditioner = if ids.is_empty() {
            Conditioner::Constant(p.zeros("constants", &[out]))
        } else {
            Conditioner::Net(ResidualNet::new(&(p / "conditioner"), ids.len() as i64, hidden, out, blocks, 0.0, rng))
        };
        RqCoupling {
            dim,
            identity_idx: Tensor::from_slice(&ids),
            transform_idx: Tensor::from_slice(&trs),
            conditioner,
            spline,
            scale: (hidden as f64).sqrt(),
        }
    }

    /// Spline parameters `[B, m, 3K - 1]` for the untouched coordinates `z_a` (`[B, |A|]`).
    fn params(&self, z_a: &Dual, batch: i64) -> Dual {
        let m = self.transform_idx.size()[0];
        let k = self.spline.bins;
        let raw = match &self.conditioner {
            Conditioner::Net(net) => net.forward_dual(z_a),
            Conditioner::Constant(c) => Dual::constant(c.unsqueeze(0).expand([batch, c.size()[0]], false)),
        };
        let raw = raw.reshape(&[batch, m, 3 * k - 1]);
        // Widths and heights scaled down by sqrt(H); the derivatives as they come.
        let wh = raw.narrow_last(0, 2 * k).scale(1.0 / self.scale);
        let d = raw.narrow_last(2 * k, k - 1);
        Dual::new(
            Tensor::cat(&[&wh.v, &d.v], -1),
            match (wh.t, d.t) {
                (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], -1)),
                _ => None,
            },
        )
    }

    fn run(&self, z: &Dual) -> (Dual, Tensor) {
        let batch = z.v.size()[0];
        let z_a = z.select_last(&self.identity_idx);
        let z_b = z.select_last(&self.transform_idx);
        let params = self.params(&z_a, batch);
        let (x_b, ld) = rq_spline(&z_b, &params, &self.spline);
        (z.copy_into_last(&self.transform_idx, &x_b), ld.sum_dim_intlist(-1, false, ld.kind()))
    }
}

impl Transform for RqCoupling {
    fn dim(&self) -> i64 {
        self.dim
    }

    fn forward(&self, z: &Tensor) -> (Tensor, Tensor) {
        let (x, ld) = self.run(&Dual::constant(z.shallow_clone()));
        (x.v, ld)
    }

    fn inverse(&self, x: &Tensor) -> (Tensor, Tensor) {
        let batch = x.size()[0];
        let x_a = Dual::constant(x.index_select(-1, &self.identity_idx));
        let params = self.params(&x_a, batch).v;
        let (z_b, ld) = rq_spline_inverse(&x.index_select(-1, &self.transform_idx), &params, &self.spline);
        (x.index_copy(-1, &self.transform_idx, &z_b), ld.sum_dim_intlist(-1, false, ld.kind()))
    }

    fn forward_jvp(&self, z: &Tensor, t: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (x, ld) = self.run(&Dual::new(z.shallow_clone(), Some(t.shallow_clone())));
        let tx = x.t.unwrap_or_else(|| t.zeros_like());
        (x.v, ld, tx)
    }
}
