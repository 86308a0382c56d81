"""Embed every text of the shared data once, in every view a representation can use (cached).

Encoding is the slow part of every benchmark on a CPU (about 10 texts/s with MiniLM at 256
tokens on 2 cores), so this fills the embedding cache in ``benchmarks/.cache`` for the HH-RLHF
pairs, the AlpacaEval pairs, the best-of-N samples and the length twins; later benchmark runs
read it and do no forward pass. Safe to interrupt: the cache keeps what it has computed.

    python benchmarks/embed_shared.py [--datasets hh twins bon alpaca]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import CACHE_DIR, load_shared_texts  # noqa: E402

from vrm_pyro import EncoderConfig  # noqa: E402
from vrm_pyro.encoders import TextEncoder  # noqa: E402
from vrm_pyro.representations import response_features  # noqa: E402

ALL_VIEWS = "joint+response_tokens+response+interaction"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["hh", "twins", "bon", "alpaca"])
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--cache-dir", default=str(CACHE_DIR))
    ap.add_argument("--encoder", default=None, help="Encoder model directory (default: the bundled MiniLM).")
    ap.add_argument("--device", default="cpu", help="Where the encoder runs (cpu, cuda).")
    ap.add_argument("--batch-size", type=int, default=64, help="Texts per forward pass.")
    args = ap.parse_args(argv)
    cfg = EncoderConfig(max_length=args.max_length, cache_dir=args.cache_dir, encoder_batch_size=args.batch_size)
    if args.encoder:
        cfg = cfg.replace(name=args.encoder)
    encoder = TextEncoder(cfg, device=args.device)
    for name in args.datasets:
        prompts, responses = load_shared_texts(name)
        t0 = time.perf_counter()
        before = encoder.forward_texts
        prompt_emb = encoder.encode(prompts, progress=True, desc=f"encode {name}: prompts")
        response_features(encoder, prompts, responses, spec=ALL_VIEWS, prompt_emb=prompt_emb, progress=True, desc=name)
        print(f"{name}: {len(set(responses)):,} distinct responses, {encoder.forward_texts - before:,} texts through "
              f"the encoder in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
