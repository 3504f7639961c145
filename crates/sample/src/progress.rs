//! Progress reporting for long loops: the caller implements [`Progress`]; the library never prints.

/// An observer told after each step of a solver.
///
/// `step_idx` counts from 0; `n_steps` is the number of steps of a fixed-step solver, and the step budget
/// (`max_steps`) of an adaptive one, whose true number of steps is not known in advance.
pub trait Progress {
    /// Called after step `step_idx` of `n_steps`.
    fn on_step(&mut self, step_idx: usize, n_steps: usize);
}

/// The observer that ignores every step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn on_step(&mut self, _step_idx: usize, _n_steps: usize) {}
}

/// Any `FnMut(step_idx, n_steps)` closure is an observer.
impl<F: FnMut(usize, usize)> Progress for F {
    fn on_step(&mut self, step_idx: usize, n_steps: usize) {
        self(step_idx, n_steps)
    }
}
