"""How much of sentence order can the encoder's sentence embeddings show? A probe, not a library feature.

The sentence-shuffled junk kind stays above 10% for every reward model. This asks whether the encoder could do
better with more order-specific training than the reward head gets: order models are fitted on the *training*
instructions' answers alone (every answer of 2 to 64 sentences, three random permutations of its sentences each,
self-supervised: "the original order scores higher"), then scored on the stress set's sentence-shuffled answers
of the held-out (test) instructions, as ``vrm stress`` builds them. Two order models on the normalised MiniLM
embeddings ``ê(s_i)`` of each sentence encoded alone:

- ``linear``: ``w · o(y)`` with ``o(y) = (1/n) Σ c_i ê(s_i)``, the representation part ``sentence_order`` (what
  a linear reward head can make of it), L2-penalised logistic regression;
- ``mlp``: ``(1/n) Σ c_i f(ê_i) + mean_i g(ê_i, ê_{i+1})``, a learned "lateness" ``f`` and a local-coherence
  score ``g`` of adjacent sentences (two-layer MLPs, 128 hidden), Adam, 3 epochs.

``junk_wins`` is the share of shuffled answers scored at or above their original (the stress measure; 82
test instructions per seed). Fold 0, seeds 0 1 2 (the coherence stage's splits).

    python benchmarks/order_ceiling.py --encoder .gpu/minilm

writes ``results/coherence/order_ceiling.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402
from vrm_pyro.representations import MAX_SENTENCES, sentences  # noqa: E402


class OrderScorer(torch.nn.Module):
    """``(1/n) Σ c_i f(ê_i) + mean_i g(ê_i, ê_{i+1})`` over one answer's sentence embeddings ``(n, E)``."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.late = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))
        self.adjacent = torch.nn.Sequential(torch.nn.Linear(4 * dim, hidden), torch.nn.GELU(),
                                            torch.nn.Linear(hidden, 1))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        n = e.shape[0]
        if n < 2:
            return e.new_zeros(())
        c = torch.linspace(-1.0, 1.0, n)
        a, b = e[:-1], e[1:]
        return (c * self.late(e).squeeze(-1)).mean() + self.adjacent(torch.cat([a, b, a * b, a - b], -1)).mean()


def order_vector(e: torch.Tensor) -> torch.Tensor:
    n = e.shape[0]
    return (torch.linspace(-1.0, 1.0, n)[:, None] * e).mean(0) if n >= 2 else e.new_zeros(e.shape[1])


def run(bench: cb.Bench, seed: int) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    idx, (_, _, test) = cb.split_rows(bench, seed, 0)
    sub = bench.alpaca.subset(idx["train"])
    answers = [sentences(r) for r in sorted(set(sub.response_a) | set(sub.response_b))]
    answers = [s for s in answers if 2 <= len(s) <= MAX_SENTENCES]
    sp, sr, sj, sk = bench.stress_junk(list(JUNK_KINDS))
    stress = [(sentences(sr[i]), sentences(sj[i])) for i, k in enumerate(sk) if k == "shuffled_sentences"
              and sp[i] in test]
    every = sorted({s for a in answers for s in a} | {s for pair in stress for a in pair for s in a})
    emb = dict(zip(every, F.normalize(bench.encoder.encode(every, desc="sentences"), dim=-1)))

    def stack(parts):
        return torch.stack([emb[s] for s in parts]) if parts else torch.zeros(1, bench.encoder.dim)

    train = []
    for a in answers:
        for _ in range(3):
            perm = rng.permutation(len(a))
            if (perm == np.arange(len(a))).all():
                perm = np.roll(perm, 1)
            train.append((stack(a), stack([a[i] for i in perm])))
    test_pairs = [(stack(a), stack(b)) for a, b in stress]
    row = {"seed": seed, "train_answers": len(answers), "train_pairs": len(train), "test_shuffled": len(test_pairs)}
    # linear on o(y): what a linear reward head can make of the sentence_order part
    d_train = torch.stack([order_vector(a) - order_vector(b) for a, b in train])
    d_test = torch.stack([order_vector(a) - order_vector(b) for a, b in test_pairs])
    sd = d_train.std(0).clamp_min(1e-6)
    w = torch.zeros(d_train.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=300)

    def closure():
        opt.zero_grad()
        loss = F.softplus(-(d_train / sd) @ w).mean() + 1e-2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        row["linear_train_accuracy"] = float(((d_train / sd) @ w > 0).float().mean())
        row["linear_junk_wins"] = float(((d_test / sd) @ w <= 0).float().mean())
    # a nonlinear order model: learned lateness and adjacent-sentence coherence
    model = OrderScorer(bench.encoder.dim)
    opt = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(3):
        order = rng.permutation(len(train))
        for start in range(0, len(train), 64):
            batch = [train[i] for i in order[start:start + 64]]
            gap = torch.stack([model(a) - model(b) for a, b in batch])
            loss = F.softplus(-gap).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        row["mlp_train_accuracy"] = float(np.mean([float(model(a) > model(b)) for a, b in train[:3000]]))
        row["mlp_junk_wins"] = float(np.mean([float(model(b) >= model(a)) for a, b in test_pairs]))
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    bench = cb.Bench(encoder=args.encoder, pairs_per_instruction=10)
    rows = [run(bench, seed) for seed in args.seeds]
    keys = [k for k in rows[0] if k != "seed"]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    cb.write_probe("order_ceiling", rows, mean, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
