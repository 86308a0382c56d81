"""The containers models consume: preference pairs as texts and as embeddings.

:class:`PreferencePairs` holds texts, column-wise, and splits them by prompt;
:class:`PairEmbeddings` holds what the reward heads see (prompt embeddings, response
features, nuisance covariates) and hands out minibatches as :class:`PairBatch`. Reading
files in their real formats is :mod:`vrm_pyro.formats`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from vrm_pyro.errors import DataError


@dataclass
class PreferencePairs:
    """A list of preference pairs, column-wise.

    ``label[i]`` is P(``response_a[i]`` preferred over ``response_b[i]``) given ``prompt[i]``.
    ``meta[i]`` keeps the row's other fields (e.g. ``generator_2``) for grouping.
    ``skipped`` counts rows dropped by ``skip_invalid`` and ``errors`` keeps their messages.
    """

    prompt: list[str]
    response_a: list[str]
    response_b: list[str]
    label: np.ndarray
    meta: list[dict[str, Any]] = field(default_factory=list)
    source: str = "<memory>"
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.label = np.asarray(self.label, dtype=np.float32)
        n = len(self.prompt)
        if not self.meta:
            self.meta = [{} for _ in range(n)]
        lengths = {len(self.response_a), len(self.response_b), len(self.label), len(self.meta)}
        if lengths != {n}:
            raise DataError(f"columns have different lengths: prompt={n}, response_a={len(self.response_a)}, "
                            f"response_b={len(self.response_b)}, label={len(self.label)}, meta={len(self.meta)}",
                            source=self.source)

    def __len__(self) -> int:
        return len(self.prompt)

    @property
    def judged(self) -> np.ndarray:
        """``(N,)`` bool: the rows a judge labelled; False for pairs made by construction
        (``meta["augmented"]``, :func:`vrm_pyro.hacking.augment_pairs`)."""
        return np.array([not m.get("augmented") for m in self.meta], dtype=bool)

    @property
    def invalid(self) -> np.ndarray:
        """``(N,)`` bool: pairs whose ``response_b`` is junk the validity gate is told is invalid: made by
        construction (not :attr:`judged`) and not marked ``meta["valid"]`` (``DataConfig.augment_valid``)."""
        return np.array([bool(m.get("augmented")) and not m.get("valid") for m in self.meta], dtype=bool)

    def __repr__(self) -> str:
        return (f"PreferencePairs(n={len(self)}, prompts={len(set(self.prompt))}, "
                f"mean_label={float(self.label.mean()) if len(self) else float('nan'):.3f}, source={self.source!r})")

    def subset(self, index: Sequence[int] | np.ndarray) -> PreferencePairs:
        idx = [int(i) for i in index]
        return PreferencePairs(
            prompt=[self.prompt[i] for i in idx],
            response_a=[self.response_a[i] for i in idx],
            response_b=[self.response_b[i] for i in idx],
            label=self.label[idx] if idx else np.zeros(0, np.float32),
            meta=[self.meta[i] for i in idx],
            source=self.source,
        )

    def sample_prompts(self, num_prompts: int, *, pairs_per_prompt: int | None = None, seed: int = 0) -> PreferencePairs:
        """A small slice with whole prompts: ``num_prompts`` prompts drawn with ``seed``, each with up to
        ``pairs_per_prompt`` of its pairs (drawn too), in the original row order."""
        rng = np.random.default_rng(seed)
        by_prompt: dict[str, list[int]] = {}
        for i, p in enumerate(self.prompt):
            by_prompt.setdefault(p, []).append(i)
        names = sorted(by_prompt, key=_stable_hash)
        chosen = [names[i] for i in rng.permutation(len(names))[:num_prompts]]
        rows: list[int] = []
        for p in chosen:
            idx = by_prompt[p]
            if pairs_per_prompt is not None and len(idx) > pairs_per_prompt:
                idx = list(rng.choice(idx, pairs_per_prompt, replace=False))
            rows.extend(int(i) for i in idx)
        return self.subset(sorted(rows))

    def concat(self, other: PreferencePairs) -> PreferencePairs:
        """These pairs followed by ``other``'s (e.g. real pairs and augmented ones)."""
        return PreferencePairs(self.prompt + other.prompt, self.response_a + other.response_a,
                               self.response_b + other.response_b, np.concatenate([self.label, other.label]),
                               self.meta + other.meta, source=self.source, skipped=self.skipped, errors=self.errors)

    def head(self, n: int) -> PreferencePairs:
        return self.subset(range(min(n, len(self))))

    def split_by_prompt(self, val_fraction: float = 0.1, test_fraction: float = 0.2,
                        seed: int = 0) -> dict[str, PreferencePairs]:
        """Split into ``train`` / ``validation`` / ``test`` so that no prompt is on two sides.

        Prompts are shuffled with ``seed`` and assigned greedily until each held-out side
        holds at least its fraction of *pairs*; the rest is ``train``.
        """
        unique = sorted(set(self.prompt), key=_stable_hash)
        rng = np.random.default_rng(seed)
        order = [unique[i] for i in rng.permutation(len(unique))]
        count: dict[str, int] = {}
        for p in self.prompt:
            count[p] = count.get(p, 0) + 1
        n = len(self)
        targets = [("test", test_fraction * n), ("validation", val_fraction * n)]
        side: dict[str, str] = {}
        it = iter(order)
        for name, target in targets:
            filled = 0
            while filled < target:
                p = next(it, None)
                if p is None:
                    break
                side[p] = name
                filled += count[p]
        for p in it:
            side[p] = "train"
        parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
        for i, p in enumerate(self.prompt):
            parts[side.get(p, "train")].append(i)
        return {k: self.subset(v) for k, v in parts.items()}

    def swapped(self, seed: int = 0) -> PreferencePairs:
        """Randomly swap a/b (label -> 1 - label) in half of the pairs; the label mean goes to ~0.5."""
        rng = np.random.default_rng(seed)
        flip = rng.random(len(self)) < 0.5
        a = [b if f else a for a, b, f in zip(self.response_a, self.response_b, flip)]
        b = [a if f else b for a, b, f in zip(self.response_a, self.response_b, flip)]
        label = np.where(flip, 1.0 - self.label, self.label)
        return PreferencePairs(list(self.prompt), a, b, label, list(self.meta), source=self.source)

    def to_dataset(self):
        """As a :class:`datasets.Dataset` with columns prompt, response_a, response_b, label."""
        import datasets

        return datasets.Dataset.from_dict({"prompt": self.prompt, "response_a": self.response_a,
                                           "response_b": self.response_b, "label": self.label.tolist()})

    def to_pandas(self):
        import pandas as pd

        df = pd.DataFrame({"prompt": self.prompt, "response_a": self.response_a,
                           "response_b": self.response_b, "label": self.label})
        meta = pd.DataFrame(self.meta)
        return pd.concat([df, meta], axis=1) if len(meta.columns) else df


def _stable_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- tensors


#: the largest embedding magnitude the models accept: far above any encoder's output (LLM hidden
#: states reach ~1e4), far below where float32 LayerNorm statistics overflow (~1e19)
MAX_ABS_EMBEDDING = 1e8


def check_embeddings(t, name: str, source: str = "embeddings") -> None:
    """Refuse NaN/Inf or magnitudes above :data:`MAX_ABS_EMBEDDING` with a :class:`DataError`."""
    import torch

    if t.numel() == 0:
        return
    peak = t.detach().abs().amax()
    if not bool(torch.isfinite(peak)):
        raise DataError("embeddings contain NaN or Inf", source=source, field=name)
    if float(peak) > MAX_ABS_EMBEDDING:
        raise DataError(f"embeddings reach |x| = {float(peak):.3g} > {MAX_ABS_EMBEDDING:.0e}; an encoder output this "
                        "large is a fault upstream: check the encoder, or normalise the embeddings", source=source,
                        field=name)


class PairBatch(NamedTuple):
    """A minibatch of ``B`` pairs, in the argument order of every model and guide:
    ``model(*batch, size=N)``. ``nuisance_*`` are ``(B, C)`` (``C = 0`` without covariates); ``junk`` ``(B,)``
    bool marks the pairs whose ``response_b`` is junk made by construction (or is None)."""

    prompt: Any
    response_a: Any
    response_b: Any
    label: Any
    nuisance_a: Any
    nuisance_b: Any
    junk: Any = None


def prompt_groups(prompt) -> tuple[Any, Any]:
    """Which rows share a prompt, from the prompt embeddings ``(N, E)`` themselves (equal rows are
    one prompt): ``(group (N,) int64, multiplicity (N,) float32)``, the size of each row's group."""
    import torch

    if prompt.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    _, group, counts = torch.unique(prompt, dim=0, return_inverse=True, return_counts=True)
    return group, counts[group].to(torch.float32)


@dataclass
class PairEmbeddings:
    """Preference pairs as the reward heads see them; what models, guides and the trainer consume.

    prompt: ``(N, E)`` prompt embeddings ``e_x``; response_a, response_b: ``(N, F)`` response
    features ``h(x, y)`` (see :mod:`vrm_pyro.representations`; ``F = E`` for the ``joint``
    representation); label: ``(N,)`` P(a preferred) in [0, 1]; nuisance_a, nuisance_b: ``(N, C)``
    observable covariates ``φ(y)`` of each response (length, formatting; see
    :mod:`vrm_pyro.covariates`), empty by default; junk: ``(N,)`` bool, True where ``response_b`` is junk
    made by construction from ``response_a`` or another prompt's answer (:func:`vrm_pyro.hacking.augment_pairs`;
    all False by default), which a validity gate (``ModelConfig.gate``) learns from. Build one with
    :func:`vrm_pyro.encoders.embed_pairs`, or from tensors you computed yourself.

    ``prompt_multiplicity`` ``(N,)`` is derived: how many pairs of *this* dataset share the row's
    prompt (rows with equal prompt embeddings). The objective weights ``w`` are a per-prompt
    latent; the trainer scales each pair's ``w`` site by ``1 / multiplicity`` so that a prompt pays
    its KL once, not once per pair (the same ELBO in expectation as one ``w`` per prompt).
    """

    prompt: Any
    response_a: Any
    response_b: Any
    label: Any
    nuisance_a: Any = None
    nuisance_b: Any = None
    junk: Any = None
    prompt_multiplicity: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import torch

        self.prompt, self.response_a, self.response_b = (
            torch.as_tensor(t, dtype=torch.float32) for t in (self.prompt, self.response_a, self.response_b))
        self.label = torch.as_tensor(self.label, dtype=torch.float32)
        n = self.prompt.shape[0]
        if self.prompt.ndim != 2:
            raise DataError(f"prompt must have shape (N, E), got {tuple(self.prompt.shape)}", source="PairEmbeddings")
        for name in ("response_a", "response_b"):
            t = getattr(self, name)
            if t.ndim != 2 or t.shape[0] != n or t.shape[1] != self.response_a.shape[1]:
                raise DataError(f"{name} must have shape (N, F) = ({n}, {self.response_a.shape[1]}), got "
                                f"{tuple(t.shape)}", source="PairEmbeddings")
        for name in ("nuisance_a", "nuisance_b"):
            t = getattr(self, name)
            t = torch.zeros(n, 0) if t is None else torch.as_tensor(t, dtype=torch.float32)
            if t.ndim != 2 or t.shape[0] != n:
                raise DataError(f"{name} must have shape (N, C), got {tuple(t.shape)}", source="PairEmbeddings")
            setattr(self, name, t)
        if self.nuisance_a.shape != self.nuisance_b.shape:
            raise DataError(f"nuisance_a {tuple(self.nuisance_a.shape)} and nuisance_b {tuple(self.nuisance_b.shape)} "
                            "differ", source="PairEmbeddings")
        self.junk = (torch.zeros(n, dtype=torch.bool) if self.junk is None
                     else torch.as_tensor(self.junk, dtype=torch.bool, device=self.label.device))
        if self.junk.shape != (n,):
            raise DataError(f"junk must have shape ({n},), got {tuple(self.junk.shape)}", source="PairEmbeddings")
        if self.label.shape != (n,):
            raise DataError(f"label must have shape ({n},), got {tuple(self.label.shape)}", source="PairEmbeddings")
        if not torch.isfinite(self.label).all() or (self.label < 0).any() or (self.label > 1).any():
            raise DataError("labels must be finite probabilities in [0, 1]", source="PairEmbeddings", field="label")
        for name in ("prompt", "response_a", "response_b", "nuisance_a", "nuisance_b"):
            check_embeddings(getattr(self, name), name, source="PairEmbeddings")
        self.prompt_multiplicity = prompt_groups(self.prompt)[1].to(self.prompt.device)

    def __len__(self) -> int:
        return int(self.prompt.shape[0])

    @property
    def dim(self) -> int:
        """E, the prompt embedding width."""
        return int(self.prompt.shape[1])

    @property
    def response_dim(self) -> int:
        """F, the width of the response features."""
        return int(self.response_a.shape[1])

    @property
    def num_covariates(self) -> int:
        """C, the number of nuisance covariates."""
        return int(self.nuisance_a.shape[1])

    def replace(self, **changes) -> PairEmbeddings:
        """A copy with some columns replaced (e.g. transformed response features)."""
        cols = {k: getattr(self, k) for k in ("prompt", "response_a", "response_b", "label", "nuisance_a",
                                              "nuisance_b", "junk")}
        return PairEmbeddings(**{**cols, **changes})

    def to(self, device) -> PairEmbeddings:
        return PairEmbeddings(*(t.to(device) for t in self.tensors()))

    def subset(self, index) -> PairEmbeddings:
        """Rows ``index``; multiplicities are those of the subset (its own prompts' counts)."""
        return PairEmbeddings(*(t[index] for t in self.tensors()))

    def batch(self, index) -> PairBatch:
        """Rows ``index`` as the model's arguments (tensors on the data's device)."""
        return PairBatch(*(t[index] for t in self.tensors()))

    def tensors(self) -> tuple:
        return (self.prompt, self.response_a, self.response_b, self.label, self.nuisance_a, self.nuisance_b, self.junk)

    def concat(self, other: PairEmbeddings) -> PairEmbeddings:
        """These pairs followed by ``other``'s (e.g. real pairs and augmented ones)."""
        import torch

        return PairEmbeddings(*(torch.cat([x, y]) for x, y in zip(self.tensors(), other.tensors())))
