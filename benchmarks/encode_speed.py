"""Encoder throughput (texts/s) on this machine: the bundled MiniLM, no cache, prompt + response pairs
of the AlpacaEval file at 256 tokens, one joint pass (the view the GPU figure in README.md also counts).

    python benchmarks/encode_speed.py [--n 128] [--device cpu] [--output benchmarks/results/encode_speed_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from shared_data import read_jsonl  # noqa: E402

from vrm_pyro import EncoderConfig  # noqa: E402
from vrm_pyro.encoders import TextEncoder  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--output", default="benchmarks/results/encode_speed_cpu.json")
    args = ap.parse_args(argv)
    rows = read_jsonl("alpaca")[:args.n]
    encoder = TextEncoder(EncoderConfig(), device=args.device, use_cache=False)
    encoder.encode(["warm-up"], ["warm-up"])
    t0 = time.perf_counter()
    encoder.encode([r["instruction"] for r in rows], [r["output_2"] for r in rows])
    seconds = time.perf_counter() - t0
    out = {"texts": len(rows), "seconds": seconds, "texts_per_s": len(rows) / seconds, "device": args.device,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
           "max_length": encoder.config.max_length,
           "command": "python benchmarks/encode_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(args.output).write_text(json.dumps(out, indent=1))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
