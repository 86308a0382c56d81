"""How well does the sentence-order model of the part ``order_score`` rank on its own? A probe beside
``order_ceiling.py`` (whose order models read the encoder's sentence embeddings).

:class:`vrm_pyro.order_model.SentenceOrderModel` is fitted as ``vrm train`` fits it
(:func:`vrm_pyro.experiment.fit_order_model`: the training instructions' answers against two reorderings each,
self-supervised), then scores the stress set's sentence-shuffled answers of the held-out (test) instructions
against their originals, as ``vrm stress`` builds them. ``junk_wins``: the share of shuffles scored at or above
their original (82 test instructions per seed and fold). Text only, no encoder: about 40 s per fit on 2 cores.

    python benchmarks/order_model_probe.py --folds 0 --seeds 0 1 2

writes ``results/coherence/order_model_probe.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402


def run(bench: cb.Bench, seed: int, fold: int) -> dict:
    idx, (_, _, test) = cb.split_rows(bench, seed, fold)
    contender = cb.Contender({}, representation="order_score")
    start = time.perf_counter()
    bench.use_order_model(contender, ("alpaca", seed, fold, None), bench.alpaca.subset(idx["train"]))
    seconds = time.perf_counter() - start
    sp, sr, sj, sk = bench.stress_junk(list(JUNK_KINDS))
    sel = [i for i, k in enumerate(sk) if k == "shuffled_sentences" and sp[i] in test]
    model = bench.encoder.order_model
    real = model.score([sp[i] for i in sel], [sr[i] for i in sel])
    junk = model.score([sp[i] for i in sel], [sj[i] for i in sel])
    row = {"seed": seed, "fold": fold, "test_shuffled": len(sel), "fit_seconds": round(seconds, 1),
           "junk_wins": float((junk >= real).float().mean()),
           "mean_gap": float((real - junk).mean())}
    print(row, flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--folds", nargs="+", type=int, default=[0])
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    bench = cb.Bench(pairs_per_instruction=10)
    rows = [run(bench, seed, fold) for fold in args.folds for seed in args.seeds]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("junk_wins", "mean_gap", "fit_seconds")}
    cb.write_probe("order_model_probe", rows, mean, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
