"""Scoring single (prompt, response) rows with a fitted reward model.

``reward`` is the posterior mean ``E_q[w . g(z)]``, ``reward_std`` its posterior standard
deviation and ``weights`` the posterior mean objective weights ``E_q[w | x]`` of the
prompt (VRM); the Bradley–Terry baseline gives ``reward`` only (the others are null).
No second response is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from vrm_pyro.checkpoint import Checkpoint, load_checkpoint
from vrm_pyro.data import load_score_rows
from vrm_pyro.errors import CheckpointError
from vrm_pyro.models.base import RewardOutput


def encoder_for(checkpoint: Checkpoint, *, cache_dir: str | None = None, device: str = "cpu",
                use_cache: bool = True):
    """The checkpoint's encoder (with its LoRA adapter re-applied), checked against the base it was trained on."""
    from vrm_pyro.encoders import TextEncoder

    cfg = checkpoint.encoder if cache_dir is None else checkpoint.encoder.replace(cache_dir=cache_dir)
    encoder = TextEncoder(cfg, device=device, use_cache=use_cache)
    if encoder.dim != checkpoint.reward_model.emb_dim:
        raise CheckpointError(f"the checkpoint expects {checkpoint.reward_model.emb_dim}-dimensional embeddings "
                              f"but encoder {cfg.name!r} gives {encoder.dim}")
    if checkpoint.encoder_identity and checkpoint.encoder_identity != encoder.base_identity:
        raise CheckpointError(f"the checkpoint was trained on encoder {checkpoint.encoder_identity!r} but "
                              f"{encoder.base_identity!r} is installed here (different weights or settings); "
                              "scores would be meaningless")
    if checkpoint.adapter is not None:
        encoder.use_cache = use_cache
        encoder.load_adapter_state_dict(checkpoint.adapter)
        encoder.model.eval()
    return encoder


def score_texts(checkpoint: Checkpoint, encoder, prompts: Sequence[str], responses: Sequence[str], *,
                num_samples: int = 32) -> RewardOutput:
    """Score ``N`` (prompt, response) texts: a :class:`RewardOutput` of CPU tensors."""
    prompt_emb = encoder.encode(list(prompts))
    response_emb = encoder.encode(list(prompts), list(responses))
    return checkpoint.reward_model.reward(prompt_emb, response_emb, num_samples=num_samples)


def _rows(out: RewardOutput, i: int) -> dict:
    return {
        "reward": float(out.reward[i]),
        "reward_std": None if out.reward_std is None else float(out.reward_std[i]),
        "weights": None if out.weights is None else [round(float(v), 6) for v in out.weights[i]],
    }


def _dump_row(row: dict) -> str:
    """One JSONL line, UTF-8 text where possible; a row carrying a lone surrogate (legal in JSON
    input as an escape, not encodable as UTF-8) keeps it as a ``\\udXXX`` escape instead."""
    text = json.dumps(row, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row)
    return text


def _complete_rows(path: Path, block: int = 1 << 20) -> int:
    """Count complete lines of a previous output and cut off a half-written last line (a kill
    mid-write), reading the file in blocks (memory does not grow with its size)."""
    if not path.exists():
        return 0
    lines, end_of_last_line, offset = 0, 0, 0
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            lines += chunk.count(b"\n")
            last = chunk.rfind(b"\n")
            if last >= 0:
                end_of_last_line = offset + last + 1
            offset += len(chunk)
    if end_of_last_line < offset:
        with open(path, "r+b") as fh:
            fh.truncate(end_of_last_line)
    return lines


def score_file(checkpoint_dir: str | os.PathLike, input_path: str, output_path: str, *,
               chunk_size: int = 512, num_samples: int = 32, cache_dir: str | None = None,
               device: str = "cpu", resume: bool = False, use_cache: bool = False) -> int:
    """Stream ``{"prompt", "response", ...}`` rows from ``input_path`` to ``output_path`` with
    ``reward``, ``reward_std`` and ``weights`` added (other fields kept). Memory is bounded by
    ``chunk_size`` (embeddings are not cached unless ``use_cache``: scored rows are usually
    unique, and a cache holds what it stores in memory); with ``resume`` the rows already in
    ``output_path`` are not scored again. Returns the number of rows written by this call."""
    ckpt = load_checkpoint(checkpoint_dir, device=device)
    encoder = encoder_for(ckpt, cache_dir=cache_dir, device=device, use_cache=use_cache)
    out_path = Path(output_path)
    done = _complete_rows(out_path) if resume else 0
    mode = "a" if resume and done else "w"
    written = 0
    with open(out_path, mode, encoding="utf-8") as fh:
        chunk: list[dict] = []

        def flush():
            nonlocal written
            out = score_texts(ckpt, encoder, [r["prompt"] for r in chunk], [r["response"] for r in chunk],
                              num_samples=num_samples)
            for i, row in enumerate(chunk):
                fh.write(_dump_row({**row, **_rows(out, i)}) + "\n")
            fh.flush()
            written += len(chunk)
            chunk.clear()

        for k, (_, row) in enumerate(load_score_rows(input_path)):
            if k < done:
                continue
            chunk.append(row)
            if len(chunk) >= chunk_size:
                flush()
        if chunk:
            flush()
    return written


__all__ = ["encoder_for", "score_file", "score_texts"]
