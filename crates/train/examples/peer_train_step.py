"""PyTorch eager peer of `train_speed.rs`: the same training step (width 256, depth 3, batch 512, DSM, VE
sigma in [0.01, 10], f32, AdamW + warm-up/cosine, clipping at 1, EMA 0.999) written the usual way.

python crates/train/examples/peer_train_step.py [n_steps] [width] [batch]  (THREADS=1 for one thread)
"""
import math
import os
import sys
import time

import torch

D, W, DEPTH, B, NF = 3, 256, 3, 512, 8
SMIN, SMAX, T_EPS = 0.01, 10.0, 1e-3


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        layers, fan_in = [], D + 2 * NF
        for _ in range(DEPTH):
            layers += [torch.nn.Linear(fan_in, W), torch.nn.SiLU()]
            fan_in = W
        out = torch.nn.Linear(W, D)
        torch.nn.init.zeros_(out.weight)
        torch.nn.init.zeros_(out.bias)
        layers.append(out)
        self.f = torch.nn.Sequential(*layers)
        self.register_buffer("freqs", 0.25 * math.sqrt(2.0) ** torch.arange(NF, dtype=torch.float32))

    def forward(self, x, sigma):
        phase = sigma.log()[:, None] * self.freqs
        c_in = (1.0 + sigma.square()).rsqrt()[:, None]
        return self.f(torch.cat([x * c_in, phase.sin(), phase.cos()], -1))


def main():
    global W, B
    n_steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    W = int(sys.argv[2]) if len(sys.argv) > 2 else W
    B = int(sys.argv[3]) if len(sys.argv) > 3 else B
    if "THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["THREADS"]))
    warmup = 20
    torch.manual_seed(0)
    total = warmup + n_steps
    net = Net()
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)

    def lr_lambda(step):
        if step < 100:
            return (step + 1) / 100
        p = min(max((step - 100) / max(total - 100, 1), 0.0), 1.0)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    data = torch.nn.functional.normalize(torch.randn(10000, D), dim=-1)

    def step():
        idx = torch.randint(0, data.shape[0], (B,))
        x0 = data[idx]
        t = T_EPS + (1 - T_EPS) * torch.rand(B)
        sigma = SMIN * (SMAX / SMIN) ** t
        eps = torch.randn_like(x0)
        xt = x0 + sigma[:, None] * eps
        loss = torch.nn.functional.mse_loss(net(xt, sigma), -eps) * D
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(net.parameters()), 1 - 0.999)
        return loss.item()

    for _ in range(warmup):
        step()
    # Timed in chunks of 20 steps: the machine is shared, so report the median and the best chunk.
    rates = []
    n_chunks = max(n_steps // 20, 1)
    cpu0 = time.process_time()
    for _ in range(n_chunks):
        start = time.perf_counter()
        for _ in range(20):
            loss = step()
        rates.append(20 / (time.perf_counter() - start))
    cpu_per_step = (time.process_time() - cpu0) / (20 * n_chunks)
    rates.sort()
    print(f"pytorch eager (width {W}, depth {DEPTH}, batch {B}, {torch.get_num_threads()} threads): "
          f"median {rates[len(rates) // 2]:.1f} steps/s, "
          f"best {rates[-1]:.1f} steps/s, {1e3 * cpu_per_step:.2f} ms CPU/step, last loss {loss:.4f}")

if __name__ == "__main__":
    main()
