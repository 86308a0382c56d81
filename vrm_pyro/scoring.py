"""Scoring single (prompt, response) rows with a fitted reward model.

``reward`` is the posterior mean of the authentic reward ``E_q[w . u(z, y)]``; ``reward_std`` its
epistemic standard deviation (from the global latents: large where the model has not seen
anything like the response); ``reward_lcb = reward - kappa * reward_std``, the pessimistic reward
for best-of-N or RL; ``weights`` the prompt's posterior mean objective weights ``E_q[w | x]``
(VRM). With ``include_nuisance`` a ``reward_total`` adds the judge's nuisance term (what the judge
would reward, length and formatting included). No second response is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from vrm_pyro.checkpoint import Checkpoint, load_checkpoint
from vrm_pyro.errors import CheckpointError, DataError
from vrm_pyro.formats import load_score_rows
from vrm_pyro.models.base import RewardOutput
from vrm_pyro.reward_model import RewardModel


def encoder_for(checkpoint: Checkpoint, *, cache_dir: str | None = None, device: str = "cpu",
                use_cache: bool = True):
    """The checkpoint's encoder (with its LoRA adapter re-applied), checked against the base it was trained on."""
    from vrm_pyro.encoders import TextEncoder
    from vrm_pyro.representations import representation_dim

    cfg = checkpoint.encoder if cache_dir is None else checkpoint.encoder.replace(cache_dir=cache_dir)
    encoder = TextEncoder(cfg, device=device, use_cache=use_cache)
    rm = checkpoint.reward_model
    if encoder.dim != rm.prompt_dim or representation_dim(cfg.representation, encoder.dim) != rm.response_dim:
        raise CheckpointError(f"the checkpoint expects {rm.prompt_dim}-dimensional prompt embeddings and "
                              f"{rm.response_dim}-dimensional response features but encoder {cfg.name!r} with "
                              f"representation {cfg.representation!r} gives {encoder.dim} and "
                              f"{representation_dim(cfg.representation, encoder.dim)}")
    if checkpoint.encoder_identity and checkpoint.encoder_identity != encoder.base_identity:
        raise CheckpointError(f"the checkpoint was trained on encoder {checkpoint.encoder_identity!r} but "
                              f"{encoder.base_identity!r} is installed here (different weights or settings); "
                              "scores would be meaningless")
    trained_lm = checkpoint.metadata.get("likelihood_identity")
    if trained_lm and trained_lm != encoder.likelihood.identity:
        raise CheckpointError(f"the checkpoint's likelihood statistics came from {trained_lm!r} but "
                              f"{encoder.likelihood.identity!r} is loaded here (EncoderConfig.likelihood_model, "
                              "--likelihood-model: other weights, dtype or caps); scores would be meaningless")
    encoder.order_model = checkpoint.order_model
    if checkpoint.adapter is not None:
        encoder.use_cache = use_cache
        encoder.load_adapter_state_dict(checkpoint.adapter)
        encoder.model.eval()
    return encoder


def reward_texts(reward_model, encoder, prompts: Sequence[str], responses: Sequence[str], *, num_samples: int = 32,
                 include_nuisance: bool = False, progress: bool = False, desc: str = "texts") -> RewardOutput:
    """Score ``N`` (prompt, response) texts with a reward model and its encoder: a :class:`RewardOutput`
    of CPU tensors (with ``nuisance``, the judge's nuisance part, when ``include_nuisance``)."""
    from vrm_pyro.encoders import embed_texts

    prompt_emb, features, phi = embed_texts(encoder, list(prompts), list(responses),
                                            nuisance=reward_model.config.nuisance, progress=progress, desc=desc)
    out = reward_model.reward(prompt_emb, features, num_samples=num_samples)
    if include_nuisance:
        out.nuisance = reward_model.nuisance_reward(prompt_emb, phi)
    return out


def score_texts(checkpoint: Checkpoint | RewardModel, encoder, prompts: Sequence[str], responses: Sequence[str], *,
                num_samples: int = 32, include_nuisance: bool = False) -> RewardOutput:
    """Score ``N`` (prompt, response) texts with a checkpoint (or its ``reward_model``): a :class:`RewardOutput`
    of CPU tensors."""
    rm = checkpoint if isinstance(checkpoint, RewardModel) else checkpoint.reward_model
    return reward_texts(rm, encoder, prompts, responses, num_samples=num_samples, include_nuisance=include_nuisance)


def output_row(out: RewardOutput, i: int, kappa: float = 1.0) -> dict:
    """The fields ``vrm score`` adds to row ``i``."""
    row = {
        "reward": float(out.reward[i]),
        "reward_std": None if out.reward_std is None else float(out.reward_std[i]),
        "reward_lcb": float(out.lcb(kappa)[i]),
        "weights": None if out.weights is None else [round(float(v), 6) for v in out.weights[i]],
    }
    if out.nuisance is not None:
        row["reward_total"] = float(out.reward[i] + out.nuisance[i])
    return row


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


def partial_path(output_path: str | os.PathLike) -> Path:
    """Where ``vrm score`` writes until it has scored every row (then renamed to the output)."""
    out = Path(output_path)
    return out.with_name(out.name + ".partial")


def score_file(checkpoint_dir: str | os.PathLike, input_path: str, output_path: str, *,
               chunk_size: int = 512, num_samples: int = 32, cache_dir: str | None = None,
               device: str = "cpu", resume: bool = False, use_cache: bool = False, kappa: float = 1.0,
               include_nuisance: bool = False) -> int:
    """Stream ``{"prompt", "response", ...}`` rows from ``input_path`` to ``output_path`` with
    ``reward``, ``reward_std``, ``reward_lcb`` and ``weights`` added (other fields kept).

    Rows go to ``OUTPUT.partial`` and the file is renamed to ``OUTPUT`` once every row is scored, so a
    command that fails leaves no output file; ``resume`` continues a ``.partial`` left by an interrupted
    run (a half-written last line is cut) without scoring its rows again. Memory is bounded by
    ``chunk_size`` (embeddings are not cached unless ``use_cache``). An input without rows is an error.
    Returns the number of rows written by this call."""
    ckpt = load_checkpoint(checkpoint_dir, device=device)
    encoder = encoder_for(ckpt, cache_dir=cache_dir, device=device, use_cache=use_cache)
    out_path, part = Path(output_path), partial_path(output_path)
    done = _complete_rows(part) if resume else 0
    written = seen = 0
    with open(part, "a" if resume and done else "w", encoding="utf-8") as fh:
        chunk: list[dict] = []

        def flush():
            nonlocal written
            out = score_texts(ckpt, encoder, [r["prompt"] for r in chunk], [r["response"] for r in chunk],
                              num_samples=num_samples, include_nuisance=include_nuisance)
            for i, row in enumerate(chunk):
                fh.write(_dump_row({**row, **output_row(out, i, kappa)}) + "\n")
            fh.flush()
            written += len(chunk)
            chunk.clear()

        for k, (_, row) in enumerate(load_score_rows(input_path)):
            seen = k + 1
            if k < done:
                continue
            chunk.append(row)
            if len(chunk) >= chunk_size:
                flush()
        if chunk:
            flush()
    if seen == 0:
        part.unlink(missing_ok=True)
        raise DataError("the input has no rows to score (expected JSONL rows with 'prompt' and 'response')",
                        source=str(input_path))
    os.replace(part, out_path)
    return written


__all__ = ["encoder_for", "output_row", "partial_path", "reward_texts", "score_file", "score_texts"]
