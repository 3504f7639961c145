//! Diffusion kernel smoothers (MATH.md section 5): the law at time t of a reversible diffusion started at
//! the empirical data law, as a kernel mean embedding; a score and a log-density with no network.
