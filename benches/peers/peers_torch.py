"""The PyTorch eager peer of the MAD workloads of `cargo xtask bench peers` (called by peers.py).

- mad_train_step / dsm_train_step: the same training step as `train::Trainer::step` written the usual way
  in PyTorch: the same MLP (same input features, weights read from our side), the same loss, autograd,
  `clip_grad_norm_` (foreach), `torch.optim.AdamW` (fused=True, PyTorch's fastest CPU option; PEER_ADAM=foreach
  selects the multi-tensor one) with the same warm-up and cosine schedule (LambdaLR), and the EMA by
  `torch._foreach_lerp_`. The batch is drawn with torch's generator (randint, rand, randn).
- reverse_sde_sampling: Euler-Maruyama on the reverse VE SDE under `torch.no_grad`, with the same score.

The SO(3) base score (MATH.md section 2) is computed in float64 with `torch.linalg.svd` and a fixed
quadrature of the 1-d integrals in v = 1 - u: a composite 8-point Gauss-Legendre rule on the geometric mesh
0, 2^-20, 2^-19, ..., 1, 2 (22 panels, 176 nodes), which resolves the peak at u = 1 down to sigma = 0.01
(relative error about 1e-9 against ours; a plain 128-node rule on [-1, 1] is off by up to 1e-1 there).

Agreement: the first-step loss, gradient, parameters and EMA after one AdamW step on the exported batch
and weights; the score and the state after the first sampler step with the exported noise; and the samples
of a whole run, whose noise comes from the same libtorch generator seeded the same way.
"""

import math
import os
import time

import numpy as np
import torch


def load(d, spec, dtype=torch.float32):
    a = np.fromfile(os.path.join(d, spec["file"]), dtype="<f8").reshape(spec["shape"])
    return torch.from_numpy(a).to(dtype)


def timed(fn, min_seconds, warmup=None, min_calls=2):
    """Runs fn until min_seconds have passed (at least min_calls times, after a warm-up call of `warmup`,
    default fn); returns (first timed result, seconds per call)."""
    (warmup or fn)()
    n, start, first = 0, time.perf_counter(), None
    while True:
        out = fn()
        first = out if n == 0 else first
        n += 1
        el = time.perf_counter() - start
        if el >= min_seconds and n >= min_calls:
            return first, el / n


# ---------------------------------------------------------------- SO(3) base score


def _mesh_rule(n_per=8, k_min=20):
    x, w = np.polynomial.legendre.leggauss(n_per)
    edges = [0.0] + [2.0**-k for k in range(k_min, -2, -1)]
    nodes, weights = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        nodes.append(0.5 * (b - a) * x + 0.5 * (b + a))
        weights.append(0.5 * (b - a) * w)
    return torch.from_numpy(np.concatenate(nodes)), torch.from_numpy(np.concatenate(weights))


V_NODES, V_WEIGHTS = _mesh_rule()


def so3_posterior_mean(x, k):
    """E[R | x] for x [B,3,3] float64 and k = alpha/sigma^2 [B]: U diag(d) V^T, d_k = d ln c / d s_k."""
    u, s, vt = torch.linalg.svd(x)
    flip = torch.linalg.det(u) * torch.linalg.det(vt) < 0
    sign = torch.where(flip, -1.0, 1.0).to(x.dtype)
    s = torch.cat([s[:, :2], s[:, 2:] * sign[:, None]], 1) * k[:, None]
    u = torch.cat([u[:, :, :2], u[:, :, 2:] * sign[:, None, None]], 2)
    v = V_NODES[None, :]
    d = []
    for kk in range(3):
        i, j = (kk + 1) % 3, (kk + 2) % 3
        si, sj, sk = s[:, i : i + 1], s[:, j : j + 1], s[:, kk : kk + 1]
        a = 0.5 * (si - sj) * v
        b = 0.5 * (si + sj) * (2.0 - v)
        # I0(a) I0(b) e^{sk u} e^{-(s1+s2+s3)} = i0e(a) i0e(b) e^{-v (min(si, sj) + sk)}, u = 1 - v
        g = torch.special.i0e(a) * torch.special.i0e(b) * torch.exp(-v * (torch.minimum(si, sj) + sk)) * V_WEIGHTS
        d.append((g * (1.0 - v)).sum(1) / g.sum(1))
    d = torch.stack(d, 1)
    return u @ (d[:, :, None] * vt)


def so3_base_score(xt, sigma):
    """VE (alpha = 1) base score of f32 points [B,3,3] at sigma [B], computed in float64, returned in f32."""
    x = xt.double()
    s2 = sigma.double().square()
    mean = so3_posterior_mean(x, 1.0 / s2)
    return ((mean - x) / s2[:, None, None]).to(xt.dtype)


# ---------------------------------------------------------------- network, loss, optimiser


class Net(torch.nn.Module):
    """The train crate's ScoreMlp: [x c_in, sin(omega ln sigma), cos(omega ln sigma)] -> MLP (SiLU)."""

    def __init__(self, p, weights, dim=9):
        super().__init__()
        fan_in, layers = dim + 2 * p["n_freqs"], []
        for i in range(p["depth"] + 1):
            fan_out = dim if i == p["depth"] else p["width"]
            layers.append(torch.nn.Linear(fan_in, fan_out))
            fan_in = fan_out
        self.layers = torch.nn.ModuleList(layers)
        with torch.no_grad():
            for i, layer in enumerate(layers):
                layer.weight.copy_(weights[f"layers.{i}.weight"])
                layer.bias.copy_(weights[f"layers.{i}.bias"])
        freqs = torch.tensor([0.25 * math.sqrt(2.0) ** k for k in range(p["n_freqs"])], dtype=torch.float64)
        self.register_buffer("freqs", freqs.float()[None, :])

    def forward(self, x, sigma):
        s = sigma[:, None]
        phase = s.log() * self.freqs
        h = torch.cat([x * (1.0 + s.square()).rsqrt(), phase.sin(), phase.cos()], 1)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < last:
                h = torch.nn.functional.silu(h)
        return h


def ve_sigma(p, t):
    return torch.exp(t * math.log(p["sigma_max"] / p["sigma_min"])) * p["sigma_min"]


def loss_fn(net, p, x0, t, eps):
    b = x0.shape[0]
    sigma = ve_sigma(p, t)
    s = sigma[:, None, None]
    xt = x0 + eps * s
    target = -eps
    if p["mad"]:
        target = target - so3_base_score(xt, sigma) * s
    pred = net(xt.reshape(b, -1), sigma)
    return (pred - target.reshape(b, -1)).square().sum(1).mean()


def make_adamw(params, p, lr):
    kind = os.environ.get("PEER_ADAM", "fused")
    kw = dict(lr=lr, betas=(p["beta1"], p["beta2"]), eps=p["eps"], weight_decay=p["weight_decay"])
    kw["fused" if kind == "fused" else "foreach"] = True
    return torch.optim.AdamW(params, **kw), kind


def lr_lambda(p):
    def f(step):
        if step < p["warmup_steps"]:
            return (step + 1) / p["warmup_steps"]
        span = max(p["total_steps"] - p["warmup_steps"], 1)
        q = min(max((step - p["warmup_steps"]) / span, 0.0), 1.0)
        fl = p["min_lr_frac"]
        return fl + (1 - fl) * 0.5 * (1 + math.cos(math.pi * q))

    return f


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def rel(a, b):
    """max |a - b| / max |b| over all entries."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300))


def train_workload(d, w, quick):
    p = w["params"]
    weights = {k: load(d, v) for k, v in w["weights"].items()}
    data = load(d, w["data"])
    b = p["batch"]

    # Agreement: one step from the exported weights on the exported batch.
    c = w["check"]
    x0, t, eps = load(d, c["x0"]), load(d, c["t"]), load(d, c["eps"])
    net = Net(p, weights)
    params = list(net.parameters())
    opt, _ = make_adamw(params, p, p["check_lr"])
    ema = [q.detach().clone() for q in params]
    loss = loss_fn(net, p, x0, t, eps)
    loss.backward()
    grad = flat([q.grad for q in params]).clone()
    norm = float(torch.nn.utils.clip_grad_norm_(params, p["grad_clip"], foreach=True))
    opt.step()
    with torch.no_grad():
        torch._foreach_lerp_(ema, params, 1 - p["ema_decay"])
    p_after, ema_after = load(d, c["params_after"]), load(d, c["ema_after"])
    check = dict(
        loss_ours=c["loss"],
        loss_peer=loss.item(),
        loss_rel=abs(loss.item() - c["loss"]) / abs(c["loss"]),
        grad_rel=rel(grad, load(d, c["grad"])),
        grad_norm_rel=abs(norm - c["grad_norm"]) / c["grad_norm"],
        params_after_max_abs_over_lr=float((flat(params).detach() - p_after).abs().max()) / p["check_lr"],
        ema_after_max_abs=float((flat(ema) - ema_after).abs().max()),
    )

    # Throughput: the training loop, from the same weights.
    net = Net(p, weights)
    params = list(net.parameters())
    opt, adam_kind = make_adamw(params, p, p["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(p))
    ema = [q.detach().clone() for q in params]
    n = data.shape[0]

    def step():
        idx = torch.randint(0, n, (b,))
        tt = p["t_eps"] + (1 - p["t_eps"]) * torch.rand(b)
        e = torch.randn(b, 3, 3)
        loss = loss_fn(net, p, data[idx], tt, e)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, p["grad_clip"], foreach=True)
        opt.step()
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - p["ema_decay"])
        return loss.item()

    for _ in range(4):
        step()
    _, sec = timed(step, 1.0 if quick else 4.0)
    return 1.0 / sec, check, f"AdamW {adam_kind}"


# ---------------------------------------------------------------- sampling


def score_fn(net, p, x, t):
    b = x.shape[0]
    sigma = ve_sigma(p, torch.full((b,), t, dtype=x.dtype))
    base = so3_base_score(x, sigma)
    delta = net(x.reshape(b, -1), sigma).reshape(x.shape) / sigma[:, None, None]
    return base + delta


def ve_g2(p, t):
    r = p["sigma_max"] / p["sigma_min"]
    s = p["sigma_min"] * r**t
    return 2.0 * s * s * math.log(r)


def uniform_grid(n, t_end):
    ts = [1.0 if i == 0 else t_end if i == n else 1.0 + (i / n) * (t_end - 1.0) for i in range(n + 1)]
    return [min(max(t, t_end), 1.0) for t in ts]


@torch.no_grad()
def euler_maruyama(net, p, x, ts):
    for i in range(len(ts) - 1):
        t, dt = ts[i], ts[i] - ts[i + 1]
        g2 = ve_g2(p, t)
        s = score_fn(net, p, x, t)
        x = x + (s * g2) * dt + torch.randn_like(x) * math.sqrt(g2 * dt)
    return x


def sampling_workload(d, w, quick):
    p = w["params"]
    net = Net(p, {k: load(d, v) for k, v in w["weights"].items()}).requires_grad_(False)
    x_init = load(d, w["x_init"])
    ts = uniform_grid(w["n_steps"], w["t_end"])
    c = w["check"]
    with torch.no_grad():
        s0 = score_fn(net, p, x_init, c["t0"])
        g2 = ve_g2(p, c["t0"])
        x1 = x_init + (s0 * g2) * c["dt"] + load(d, c["z0"]) * math.sqrt(g2 * c["dt"])

    def run(steps=ts):
        torch.manual_seed(w["run_seed"])
        return euler_maruyama(net, p, x_init, steps)

    # Warm-up: a few steps; one timed run is enough in quick mode (a run takes seconds).
    out, sec = timed(run, 1.0 if quick else 4.0, warmup=lambda: run(ts[:4]), min_calls=1 if quick else 2)
    ours = load(d, w["samples"])
    check = dict(
        score0_rel=rel(s0, load(d, c["score0"])),
        x1_rel=rel(x1, load(d, c["x1"])),
        samples_rel=rel(out, ours),
        samples_median_abs=float((out - ours).abs().median()),
    )
    return x_init.shape[0] * w["n_steps"] / sec, check, "no_grad"


def run(d, w, quick):
    """Returns (peer throughput, agreement figures, note) for one manifest entry."""
    if w["workload"] in ("mad_train_step", "dsm_train_step"):
        return train_workload(d, w, quick)
    return sampling_workload(d, w, quick)
