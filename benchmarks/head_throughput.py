"""Head-only SVI throughput on cached embeddings: pairs/s of VRM and the baseline, same batch, same device.

    python benchmarks/head_throughput.py --device cpu --output benchmarks/results/head_throughput_cpu.json

Measures full training steps (ELBO forward + backward + clip + AdamW) after a warm-up, with the
embeddings resident on the device (no host<->device copy in the loop), plus peak GPU memory on CUDA.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from vrm_pyro import ModelConfig, PairEmbeddings, TrainConfig, build_reward_model
from vrm_pyro.train import SiteScale, kl_weights


def measure(cfg: ModelConfig, data: PairEmbeddings, batch: int, steps: int, device: torch.device, particles: int):
    rm = build_reward_model(cfg, emb_dim=data.dim, seed=0).to(device)
    elbo = rm.elbo("trace", num_particles=particles)
    opt = torch.optim.AdamW(rm.parameters(), lr=1e-3)
    d = data.to(device)
    n = len(d)
    tcfg = TrainConfig()

    def step(i):
        idx = torch.randint(0, n, (batch,), device=device)
        with SiteScale(kl_weights(tcfg, 10**9, d.prompt_multiplicity[idx])):
            loss = elbo(*d.batch(idx), size=n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 10.0)
        opt.step()

    for i in range(10):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"pairs_per_s": steps * batch / dt, "ms_per_step": 1000 * dt / steps,
           "params": sum(p.numel() for p in rm.parameters())}
    if device.type == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--emb-dim", type=int, default=384)
    ap.add_argument("--particles", type=int, default=1)
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    n, E = 20000, args.emb_dim
    data = PairEmbeddings(torch.randn(n, E, generator=g), torch.randn(n, E, generator=g), torch.randn(n, E, generator=g),
                          torch.rand(n, generator=g))
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "batch": args.batch, "steps": args.steps, "emb_dim": E}
    for name, cfg in {"bt_linear": ModelConfig(model="bt"), "vrm": ModelConfig()}.items():
        res[name] = measure(cfg, data, args.batch, args.steps, device, args.particles)
    res["vrm_over_bt_time"] = res["bt_linear"]["pairs_per_s"] / res["vrm"]["pairs_per_s"]
    print(json.dumps(res, indent=1))
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
