"""Can a learned, non-linear order model beat the linear one of ``order_score``? A probe, not a library feature.

Since round 19 the default's base is order-blind, so on a shuffle that keeps the answer's bag of sentences the
reward errs exactly where its order model does (``results/coherence_r20/shuffle_split.md``). That model
(:class:`vrm_pyro.order_model.SentenceOrderModel`) is linear in hashed lexical features: it learns where each word
tends to sit, but not how one sentence leads into the next. This probe fits, on the same texts (every answer of the
training instructions, as ``+oswa`` fits the default's), a small network that can:

- each sentence (list marks stripped, as the linear model reads it) is the mean of hashed word embeddings (2^16
  buckets), plus embeddings of its first word, its first two words and its last character, and its log length;
- a 2-layer Transformer encoder (width 64, 4 heads) reads the sentences in order, with embeddings of each one's
  place from either end (first, second, ... up to 5), so that it can score transitions and openings;
- ``s(y)`` is the mean of a linear read-out over the sentences; trained with the linear model's pairwise loss,
  ``softplus(-(s(y) - s(π(y))))``, against a fresh permutation of each answer's sentences every epoch (AdamW, one
  cycle, dropout and word dropout against over-fitting; at most 24 sentences, the first and last 12).

Measured as ``order_model_probe.py`` measures the linear one: ``val_reorder_wins``, the share of the validation
instructions' answers (two stress-test shuffles each) scored at or above their original; ``junk_wins``, the same for
the held-out stress set's sentence shuffles (82 per seed). Rows: the linear model, the network alone, and their sum
``linear + λ network`` for λ in 0.25, 0.5, 1, 2 (λ to be chosen on validation); ``..._network_ties``, the share of
rows the network alone scores alike (an answer of one sentence, which it scores 0, or a shuffle that moves only
sentences past the first and last 12), counted as wins as ``order_model_probe.py`` counts them. Fold 0, seeds 0 1 2,
about 5 minutes per seed on 2 cores.

    python benchmarks/order_network_probe.py --seeds 0 1 2

writes ``results/coherence/order_network.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro.covariates import WORD, sentences, unmarked  # noqa: E402
from vrm_pyro.experiment import fit_order_model  # noqa: E402
from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402

BUCKETS = 2**16
MAX_SENTENCES = 24
MAX_WORDS = 48
PLACES = 6
ENDINGS = ".!?:,;)"
WEIGHTS = (0.25, 0.5, 1.0, 2.0)


def _bucket(key: str) -> int:
    return zlib.crc32(key.encode()) % BUCKETS


def encode(response: str) -> list[tuple[list[int], int, int, int, float]]:
    """Per kept sentence: (word buckets, first-word bucket, first-two-words bucket, ending code, log length)."""
    parts = [unmarked(s) for s in sentences(response)]
    if len(parts) > MAX_SENTENCES:
        parts = parts[:MAX_SENTENCES // 2] + parts[-MAX_SENTENCES // 2:]
    out = []
    for s in parts:
        words = WORD.findall(s.lower())
        last = s.rstrip()[-1:]
        out.append(([_bucket("w:" + w) for w in words[:MAX_WORDS]] or [0], _bucket("f1:" + (words[0] if words else "")),
                    _bucket("f2:" + " ".join(words[:2])), ENDINGS.find(last) + 1 if last else 0,
                    float(np.log1p(len(words)))))
    return out


class SentenceTransformerOrder(nn.Module):
    """``s(y)`` from encoded answers (:func:`encode`): ``(B,)``; ``perms`` reorders each answer's sentences."""

    def __init__(self, width: int = 64, layers: int = 2, dropout: float = 0.3, word_dropout: float = 0.3):
        super().__init__()
        self.words = nn.EmbeddingBag(BUCKETS, width, mode="mean")
        self.openings = nn.Embedding(BUCKETS, width)
        self.endings = nn.Embedding(len(ENDINGS) + 1, width)
        self.length = nn.Linear(1, width)
        self.from_start, self.from_end = nn.Embedding(PLACES, width), nn.Embedding(PLACES, width)
        self.project = nn.Sequential(nn.Linear(width, width), nn.GELU())
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.readout = nn.Linear(width, 1)
        self.word_dropout = word_dropout
        self.rng = np.random.default_rng(0)  # word dropout's draws (fit_network seeds it)

    def _sentences(self, answers) -> torch.Tensor:
        ids, offsets, first, first2, ending, length = [], [], [], [], [], []
        for answer in answers:
            for words, f1, f2, end, n in answer:
                if self.training and self.word_dropout:
                    words = [w for w, u in zip(words, self.rng.random(len(words))) if u >= self.word_dropout] or words[:1]
                offsets.append(len(ids))
                ids += words
                first.append(f1)
                first2.append(f2)
                ending.append(end)
                length.append(n)
        return (self.words(torch.tensor(ids), torch.tensor(offsets)) + self.openings(torch.tensor(first))
                + self.openings(torch.tensor(first2)) + self.endings(torch.tensor(ending))
                + self.length(torch.tensor(length)[:, None]))

    def forward(self, answers, perms=None) -> torch.Tensor:
        e, sizes = self._sentences(answers), [len(a) for a in answers]
        x = torch.zeros(len(sizes), max(sizes), e.shape[1])
        pad = torch.ones(len(sizes), max(sizes), dtype=torch.bool)
        start_place, end_place = torch.zeros_like(pad, dtype=torch.long), torch.zeros_like(pad, dtype=torch.long)
        start = 0
        for b, n in enumerate(sizes):
            order = perms[b] if perms is not None else list(range(n))
            x[b, :n], pad[b, :n] = e[start:start + n][order], False
            start_place[b, :n] = torch.arange(n).clamp(max=PLACES - 1)
            end_place[b, :n] = torch.arange(n - 1, -1, -1).clamp(max=PLACES - 1)
            start += n
        y = self.encoder(self.project(x) + self.from_start(start_place) + self.from_end(end_place),
                         src_key_padding_mask=pad)
        return self.readout(y).squeeze(-1).masked_fill(pad, 0.0).sum(1) / torch.tensor(sizes)


def fit_network(responses: list[str], seed: int, epochs: int = 8, batch: int = 64, lr: float = 2e-3,
                weight_decay: float = 0.05) -> SentenceTransformerOrder:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    answers = [a for a in map(encode, responses) if len(a) >= 2]
    net = SentenceTransformerOrder()
    net.rng = rng
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(answers) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    net.train()
    for epoch in range(epochs):
        total = 0.0
        order = rng.permutation(len(answers))
        for j in range(0, len(answers), batch):
            chunk = [answers[k] for k in order[j:j + batch]]
            perms = []
            for a in chunk:  # a reordering that moves something
                p = rng.permutation(len(a))
                while (p == np.arange(len(a))).all():
                    p = rng.permutation(len(a))
                perms.append(list(p))
            loss = F.softplus(-(net(chunk) - net(chunk, perms))).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item() * len(chunk)
        print(f"  epoch {epoch}: training loss {total / len(answers):.4f}", flush=True)
    return net.eval()


@torch.no_grad()
def network_scores(net: SentenceTransformerOrder, responses: list[str]) -> torch.Tensor:
    """``(N,)``; 0 for an answer of one sentence (nothing to order)."""
    answers = [encode(r) for r in responses]
    out = torch.zeros(len(answers))
    rows = [i for i, a in enumerate(answers) if len(a) >= 2]
    for j in range(0, len(rows), 256):
        out[rows[j:j + 256]] = net([answers[i] for i in rows[j:j + 256]])
    return out


def run(bench: cb.Bench, seed: int, fold: int, epochs: int) -> dict:
    idx, (train_instructions, _, test) = cb.split_rows(bench, seed, fold)
    train = bench.order_training(idx["train"], train_instructions, all_answers=True)
    texts = list(dict.fromkeys((p, r) for p, a, b in zip(train.prompt, train.response_a, train.response_b)
                               for r in (a, b)))
    start = time.perf_counter()
    fit_order_model(bench.encoder, {"train": train}, seed=0, representation="order_score", sentence_words=True,
                    l2=1e-4)  # the default's order model (vrm_pyro.config.TRAIN_RECIPE)
    linear, linear_s = bench.encoder.order_model, time.perf_counter() - start
    start = time.perf_counter()
    net = fit_network([r for _, r in texts], seed, epochs)
    row = {"seed": seed, "fold": fold, "training_answers": len(texts), "linear_fit_s": round(linear_s),
           "network_fit_s": round(time.perf_counter() - start)}
    shuffle, rng = JUNK_KINDS["shuffled_sentences"], np.random.default_rng([seed, 11])  # as order_model_probe.py
    val = bench.alpaca.subset(idx["validation"])
    val_texts = dict.fromkeys((p, r) for p, a, b in zip(val.prompt, val.response_a, val.response_b) for r in (a, b))
    val_rows = [(p, r, s) for p, r in val_texts for s in (shuffle(p, r, "", rng) for _ in range(2)) if s != r]
    sp, sr, sj, _ = bench.stress_junk(["shuffled_sentences"])
    test_rows = [(p, r, j) for p, r, j in zip(sp, sr, sj) if p in test]
    for name, rows in (("val_reorder_wins", val_rows), ("junk_wins", test_rows)):
        prompts, real, junk = (list(c) for c in zip(*rows))
        d_linear = linear.score(prompts, real) - linear.score(prompts, junk)
        d_net = network_scores(net, real) - network_scores(net, junk)
        row[f"{name}_n"] = len(rows)
        row[f"{name}_linear"] = float((d_linear <= 0).float().mean())
        row[f"{name}_network"] = float((d_net <= 0).float().mean())
        row[f"{name}_network_ties"] = float((d_net == 0).float().mean())
        for weight in WEIGHTS:
            row[f"{name}_sum{weight:g}"] = float((d_linear + weight * d_net <= 0).float().mean())
    print(row, flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", default="order_network", help="results/coherence/<out>.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    bench = cb.Bench(pairs_per_instruction=10)
    rows = [run(bench, seed, args.fold, args.epochs) for seed in args.seeds]
    keys = [k for k in rows[0] if k.startswith(("val_reorder_wins", "junk_wins", "linear_fit", "network_fit"))]
    cb.write_probe(args.out, rows, {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}, argv,
                   script="order_network_probe")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
