"""The peer side of `cargo xtask bench peers`.

Our side (`cargo run --release -p benches --bin peers -- --dir DIR`) writes, per workload, its inputs and
outputs as little-endian float64 files and its throughput into DIR/manifest.json. This script runs the same
computation the way a careful researcher would in vectorised NumPy/SciPy, times it, measures both outputs
against an independent high-accuracy reference on a subsample, and prints the ratio ours/peer.

The MAD workloads (training step, reverse-SDE sampling) run in PyTorch eager (peers_torch.py, imported only
when the manifest has them); for them the table reports how closely the peer reproduces our numbers.
"""

import argparse
import json
import math
import os
import sys
import time
import warnings

import numpy as np
from scipy import integrate, special

# quad warns about roundoff on the sharply peaked small-sigma integrands; the reference error reported below
# (ours against it at ~1e-13) bounds what that costs.
warnings.filterwarnings("ignore", category=integrate.IntegrationWarning)


def load(d, spec):
    return np.fromfile(os.path.join(d, spec["file"]), dtype="<f8").reshape(spec["shape"])


def timed(fn, *args, min_seconds=1.0):
    """Runs fn until min_seconds have passed (at least twice); returns (last result, seconds per call)."""
    fn(*args)  # warm-up
    n, start = 0, time.perf_counter()
    while True:
        out = fn(*args)
        n += 1
        el = time.perf_counter() - start
        if el >= min_seconds and n >= 2:
            return out, el / n


# ---------------------------------------------------------------- SO(3) base score (matrix Fisher mean)

GL_NODES = 128  # what public code does: a fixed Gauss-Legendre rule on u in [-1, 1]


def proper_svd(f):
    u, s, vt = np.linalg.svd(f)
    det = np.linalg.det(u) * np.linalg.det(vt)
    flip = det < 0
    s = s.copy()
    s[flip, 2] *= -1
    u = u.copy()
    u[flip, :, 2] *= -1
    return u, s, vt


def so3_base_score_peer(x, alpha, sigma):
    """s_base = (alpha E[R|X] - X)/sigma^2 with E[R|X] = U diag(d) V^T, d_k = d log c / d s_k (MATH.md 2)."""
    f = alpha[:, None, None] * x / (sigma**2)[:, None, None]
    u, s, vt = proper_svd(f)
    nodes, weights = np.polynomial.legendre.leggauss(GL_NODES)
    d = np.empty_like(s)
    uu = nodes[None, :]
    for k in range(3):
        i, j = (k + 1) % 3, (k + 2) % 3
        si, sj, sk = s[:, i : i + 1], s[:, j : j + 1], s[:, k : k + 1]
        a = 0.5 * (si - sj) * (1 - uu)
        b = 0.5 * (si + sj) * (1 + uu)
        # exponentially scaled: I0(a) I0(b) e^{sk u} = i0e(a) i0e(b) e^{a + b + sk u}; factor out e^{si+sj+sk}
        expo = np.abs(a) + np.abs(b) + sk * uu - (si + sj + sk)
        g = special.i0e(a) * special.i0e(b) * np.exp(expo)
        num = (g * uu * weights).sum(axis=1)
        den = (g * weights).sum(axis=1)
        d[:, k] = num / den
    mean = u @ (d[:, :, None] * vt)
    return (alpha[:, None, None] * mean - x) / (sigma**2)[:, None, None]


def so3_reference(x, alpha, sigma):
    """Adaptive quadrature (scipy.integrate.quad) of the same integrals, per point, in scaled form."""
    f = alpha[:, None, None] * x / (sigma**2)[:, None, None]
    u, s, vt = proper_svd(f)
    out = np.empty_like(x)
    for p in range(x.shape[0]):
        d = np.empty(3)
        for k in range(3):
            i, j = (k + 1) % 3, (k + 2) % 3
            si, sj, sk = s[p, i], s[p, j], s[p, k]

            def g(v, m):
                a, b = 0.5 * (si - sj) * (1 - v), 0.5 * (si + sj) * (1 + v)
                return special.i0e(a) * special.i0e(b) * math.exp(abs(a) + abs(b) + sk * v - (si + sj + sk)) * v**m

            scale = max(abs(si) + abs(sj) + abs(sk), 1.0)
            pts = [1 - 1 / scale, 1 - 10 / scale, 1 - 100 / scale]
            pts = sorted(set(q for q in pts if -1 < q < 1))
            kw = dict(epsabs=0, epsrel=1e-13, limit=500, points=pts or None)
            num = integrate.quad(g, -1, 1, args=(1,), **kw)[0]
            den = integrate.quad(g, -1, 1, args=(0,), **kw)[0]
            d[k] = num / den
        mean = u[p] @ np.diag(d) @ vt[p]
        out[p] = (alpha[p] * mean - x[p]) / sigma[p] ** 2
    return out


# ---------------------------------------------------------------- S^2 heat-kernel smoother

L_SERIES = 400  # series truncation; public code uses a fixed cut


def heat_log_kernel_series(cos, t, n_terms):
    """log k_t on S^2 (w.r.t. the uniform probability measure) by the Legendre series."""
    p_prev, p = np.ones_like(cos), cos.copy()
    total = np.ones_like(cos) + 3 * math.exp(-2 * t) * cos
    for l in range(1, n_terms):
        p_prev, p = p, ((2 * l + 1) * cos * p - l * p_prev) / (l + 1)
        c = (2 * l + 3) * math.exp(-(l + 1) * (l + 2) * t)
        if c < 1e-300:
            break
        total += c * p
    return np.log(np.maximum(total, 1e-300))


def smoother_peer(data, queries, t, n_terms=L_SERIES, chunk=1000):
    """log rho_t (area measure) at each query: log of (1/4pi) mean_i k_t(<x, x_i>)."""
    out = np.empty(queries.shape[0])
    for s in range(0, queries.shape[0], chunk):
        cos = np.clip(queries[s : s + chunk] @ data.T, -1.0, 1.0)
        logk = heat_log_kernel_series(cos, t, n_terms)
        out[s : s + chunk] = special.logsumexp(logk, axis=1) - math.log(data.shape[0]) - math.log(4 * math.pi)
    return out


TORCH_WORKLOADS = ("mad_train_step", "dsm_train_step", "reverse_sde_sampling")


def rel_err(a, ref):
    return float(np.max(np.abs(a - ref) / np.maximum(np.abs(ref), 1e-300)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, help="libtorch intra-op threads of the PyTorch peer")
    args = ap.parse_args()
    manifest = json.load(open(os.path.join(args.dir, "manifest.json")))
    rows, torch_rows = [], []
    for w in manifest["workloads"]:
        name = w["workload"]
        start = time.perf_counter()
        if name in TORCH_WORKLOADS:
            import peers_torch

            if args.threads:
                peers_torch.torch.set_num_threads(args.threads)
            peer_per_s, check, how = peers_torch.run(args.dir, w, args.quick)
            torch_rows.append(
                dict(
                    workload=name,
                    ours_per_s=w["ours_per_s"],
                    peer_per_s=peer_per_s,
                    ratio=w["ours_per_s"] / peer_per_s,
                    agreement=check,
                    peer=f"PyTorch {peers_torch.torch.__version__} eager, {how}, {peers_torch.torch.get_num_threads()} threads",
                    note=w.get("note", ""),
                )
            )
            print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
            continue
        if name == "so3_base_score":
            x, alpha, sigma = (load(args.dir, w["inputs"][k]) for k in ("x", "alpha", "sigma"))
            ours = load(args.dir, w["outputs"]["score"])
            peer, sec = timed(so3_base_score_peer, x, alpha, sigma)
            peer_per_s = x.shape[0] / sec
            sub = np.arange(0, x.shape[0], max(1, x.shape[0] // 200))
            ref = so3_reference(x[sub], alpha[sub], sigma[sub])
            norm = lambda a: np.linalg.norm(a.reshape(a.shape[0], -1), axis=1)
            err_ours = float(np.max(norm(ours[sub] - ref) / np.maximum(norm(ref), 1e-300)))
            err_peer = float(np.max(norm(peer[sub] - ref) / np.maximum(norm(ref), 1e-300)))
        elif name == "s2_smoother":
            data, queries = load(args.dir, w["inputs"]["data"]), load(args.dir, w["inputs"]["queries"])
            t = float(w["params"]["t"])
            ours = load(args.dir, w["outputs"]["log_density"])
            n_peer = min(queries.shape[0], int(w["params"].get("peer_queries", 2000)), 250 if args.quick else 10**9)
            peer, sec = timed(smoother_peer, data, queries[:n_peer], t, min_seconds=0.1)
            peer_per_s = n_peer / sec
            sub = np.arange(0, n_peer, max(1, n_peer // (50 if args.quick else 200)))
            ref = smoother_peer(data, queries[sub], t, n_terms=4000)
            err_ours = rel_err(np.exp(ours[sub]), np.exp(ref))
            err_peer = rel_err(np.exp(peer[sub]), np.exp(ref))
        else:
            raise SystemExit(f"unknown workload {name}")
        rows.append(
            dict(
                workload=name,
                ours_per_s=w["ours_per_s"],
                peer_per_s=peer_per_s,
                ratio=w["ours_per_s"] / peer_per_s,
                ours_max_rel_err=err_ours,
                peer_max_rel_err=err_peer,
                accuracy_gap=err_peer - err_ours,
                note=w.get("note", ""),
            )
        )
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if rows:
        print(f"{'workload':<18} {'ours/s':>12} {'peer/s':>12} {'ratio':>8} {'ours err':>10} {'peer err':>10}")
    for r in rows:
        print(
            f"{r['workload']:<18} {r['ours_per_s']:>12.4g} {r['peer_per_s']:>12.4g} {r['ratio']:>8.2f}"
            f" {r['ours_max_rel_err']:>10.2e} {r['peer_max_rel_err']:>10.2e}"
        )
    if torch_rows:
        print(f"\n{'workload':<22} {'ours/s':>12} {'PyTorch/s':>12} {'ratio':>8}  agreement with ours")
        for r in torch_rows:
            agree = ", ".join(f"{k} {v:.3g}" for k, v in r["agreement"].items())
            print(f"{r['workload']:<22} {r['ours_per_s']:>12.4g} {r['peer_per_s']:>12.4g} {r['ratio']:>8.2f}  {agree}")
            print(f"{'':<22} ({r['peer']}; {r['note']})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows + torch_rows, fh, indent=2)


if __name__ == "__main__":
    main()
