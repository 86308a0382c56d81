"""The main job: load data, split by prompt, embed once, fit VRM and the baseline, evaluate, save.

This is what ``vrm train`` runs; it only composes the library's pieces, so a notebook can
run the same thing with :func:`train_and_evaluate` or step by step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vrm_pyro.checkpoint import save_checkpoint
from vrm_pyro.config import DataConfig, EncoderConfig, ModelConfig, TrainConfig
from vrm_pyro.data import PairEmbeddings, load_from_config
from vrm_pyro.evaluate import evaluate_pairs
from vrm_pyro.registry import build_reward_model
from vrm_pyro.reward_model import RewardModel
from vrm_pyro.train import FitResult, fit

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """One fitted model of a run: where it was saved, its fit history and its test metrics."""

    name: str
    reward_model: RewardModel
    fit: FitResult
    test: dict
    checkpoint: Path | None = None


@dataclass
class ExperimentResult:
    runs: dict[str, RunResult] = field(default_factory=dict)
    split_sizes: dict[str, int] = field(default_factory=dict)
    skipped_rows: int = 0

    def table(self) -> str:
        """A plain-text table of held-out metrics, one row per model."""
        lines = [f"{'model':<6} {'test acc':>9} {'test nll':>9} {'brier':>7} {'ece':>7} {'epochs':>7} {'seconds':>8}"]
        for name, r in self.runs.items():
            t = r.test
            lines.append(f"{name:<6} {t['accuracy']:>9.4f} {t['nll']:>9.4f} {t['brier']:>7.4f} {t['ece']:>7.4f} "
                         f"{len(r.fit.history):>7d} {r.fit.seconds:>8.1f}")
        return "\n".join(lines)


def embed_splits(data_cfg: DataConfig, encoder_cfg: EncoderConfig, *, progress: bool = True):
    """Load, split by prompt, embed (cached). Returns ``(encoder, {split: PairEmbeddings}, pairs, splits)``."""
    from vrm_pyro.encoders import TextEncoder, embed_pairs

    pairs = load_from_config(data_cfg)
    if pairs.skipped:
        log.warning("skipped %d invalid rows of %s (first: %s)", pairs.skipped, pairs.source, pairs.errors[0])
    splits = pairs.split_by_prompt(data_cfg.val_fraction, data_cfg.test_fraction, data_cfg.split_seed)
    encoder = TextEncoder(encoder_cfg)
    embedded = {name: embed_pairs(part, encoder, progress=progress) for name, part in splits.items() if len(part)}
    return encoder, embedded, pairs, splits


def fit_and_evaluate(model_cfg: ModelConfig, train_cfg: TrainConfig, embedded: dict[str, PairEmbeddings],
                     *, name: str | None = None) -> RunResult:
    """Build from ``model_cfg``, fit on ``train`` with early stopping on ``validation``, test on ``test``."""
    rm = build_reward_model(model_cfg, emb_dim=embedded["train"].dim, seed=train_cfg.seed)
    result = fit(rm, embedded["train"], embedded.get("validation"), train_cfg)
    test = embedded.get("test") or embedded.get("validation")
    metrics = evaluate_pairs(rm, test, num_samples=train_cfg.eval_samples, seed=train_cfg.seed) if test is not None else {}
    return RunResult(name or model_cfg.model, rm, result, metrics)


def train_and_evaluate(data_cfg: DataConfig, encoder_cfg: EncoderConfig, model_cfg: ModelConfig,
                       train_cfg: TrainConfig, *, output: str | Path | None = None,
                       compare_baseline: bool = True, progress: bool = True) -> ExperimentResult:
    """Fit ``model_cfg`` (and, for VRM, the Bradley–Terry baseline on the same splits); save checkpoints.

    The model is saved to ``output``; the baseline trained beside VRM to ``output/baseline``.
    """
    build_reward_model(model_cfg, emb_dim=8)  # fail on unknown prior/guide names before any encoding
    encoder, embedded, pairs, splits = embed_splits(data_cfg, encoder_cfg, progress=progress)
    result = ExperimentResult(split_sizes={k: len(v) for k, v in splits.items()}, skipped_rows=pairs.skipped)
    configs = [(model_cfg.model, model_cfg)]
    if compare_baseline and model_cfg.model != "bt":
        configs.append(("bt", model_cfg.replace(model="bt")))
    for name, cfg in configs:
        run = fit_and_evaluate(cfg, train_cfg, embedded, name=name)
        if output is not None:
            path = Path(output) if name == model_cfg.model else Path(output) / "baseline"
            run.checkpoint = save_checkpoint(
                path, run.reward_model, encoder=encoder_cfg, encoder_identity=encoder.identity, train=train_cfg,
                metadata={"data": data_cfg.to_dict(), "test_metrics": run.test, "best_epoch": run.fit.best_epoch,
                          "split_sizes": result.split_sizes, "history": run.fit.history})
        result.runs[name] = run
    return result
