"""The main job: load data, split by prompt, embed once, fit VRM and the baseline, evaluate, save.

This is what ``vrm train`` runs; it only composes the library's pieces, so a notebook can
run the same thing with :func:`train_and_evaluate` or step by step.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vrm_pyro.checkpoint import load_checkpoint, save_checkpoint
from vrm_pyro.config import DataConfig, EncoderConfig, ModelConfig, TrainConfig
from vrm_pyro.data import PairEmbeddings, PreferencePairs
from vrm_pyro.errors import ConfigError
from vrm_pyro.evaluate import evaluate_pairs
from vrm_pyro.formats import load_from_config
from vrm_pyro.hacking import augment, junk_kinds
from vrm_pyro.registry import build_reward_model
from vrm_pyro.representations import LIKELIHOOD_PARTS, representation_dim
from vrm_pyro.reward_model import RewardModel
from vrm_pyro.train import FitResult, fit, is_main_process

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


def augmentation(train: PreferencePairs, data_cfg: DataConfig) -> PreferencePairs:
    """The augmented pairs ``vrm train`` adds to a training split: ``data_cfg.augment`` at ``augment_rate`` (kinds
    with a rate of their own at theirs), from ``augment_from``'s answers, ``augment_valid`` told valid to the gate
    (:func:`vrm_pyro.hacking.augment`). Empty when augmentation is off."""
    return augment(train, data_cfg.augment, data_cfg.augment_rate, seed=data_cfg.split_seed,
                   source=data_cfg.augment_from, valid=junk_kinds(data_cfg.augment_valid))


def load_splits(data_cfg: DataConfig):
    """Load, split by prompt, and augment the training split (``data_cfg.augment``).
    Returns ``(pairs, {split: PreferencePairs})``; with augmentation also ``"train_augmented"``, the augmented
    pairs alone (already appended to ``"train"``)."""
    pairs = load_from_config(data_cfg)
    if pairs.skipped:
        log.warning("skipped %d invalid rows of %s (first: %s)", pairs.skipped, pairs.source, pairs.errors[0])
    splits = pairs.split_by_prompt(data_cfg.val_fraction, data_cfg.test_fraction, data_cfg.split_seed)
    if data_cfg.augment:
        extra = augmentation(splits["train"], data_cfg)
        splits["train"] = splits["train"].concat(extra)
        splits["train_augmented"] = extra
    return pairs, splits


def fit_order_model(encoder, splits: dict, seed: int = 0, representation: str | None = None, *,
                    progress: bool = False, **options) -> None:
    """With the representation part ``order_score`` or ``order_margin`` (in ``representation``, default the encoder config's): fit the
    encoder's sentence-order model (:class:`vrm_pyro.order_model.SentenceOrderModel`) on the distinct (prompt,
    response) texts of the training split's *real* pairs (augmented ones left out), self-supervised; else nothing.
    ``options`` go to :meth:`~vrm_pyro.order_model.SentenceOrderModel.fit` (``reorderings``, ``l2``, ...), over the
    encoder config's ``order_features`` and ``order_l2``;
    ``progress`` reports the fit as a stage (a line at its start and end; 12–18 s for 3,200 answers on 2 cores)."""
    from vrm_pyro.order_model import SentenceOrderModel, needs_order_model, parse_order_features

    if not needs_order_model(representation or encoder.config.representation):
        return
    from vrm_pyro.progress import progress as stage

    options = {**parse_order_features(encoder.config.order_features), "l2": encoder.config.order_l2, **options}
    train = splits["train"]
    real = len(train) - len(splits.get("train_augmented", ()))
    texts = dict.fromkeys((p, r) for i in range(real) for p, r in
                          ((train.prompt[i], train.response_a[i]), (train.prompt[i], train.response_b[i])))
    with stage(len(texts), "fit sentence-order model (training answers)", enabled=progress) as bar:
        encoder.order_model = SentenceOrderModel.fit([p for p, _ in texts], [r for _, r in texts], seed=seed,
                                                     **options)
        bar.update(len(texts))


def embed_splits(data_cfg: DataConfig, encoder_cfg: EncoderConfig, *, nuisance: str = "", progress: bool = True):
    """Load, split by prompt, fit the sentence-order model where the representation has one
    (:func:`fit_order_model`), embed (cached). Returns ``(encoder, {split: PairEmbeddings}, pairs, splits)``."""
    from vrm_pyro.encoders import TextEncoder

    pairs, splits = load_splits(data_cfg)
    encoder = TextEncoder(encoder_cfg.replace(mode="frozen"))
    embedded = embed_loaded(splits, encoder, data_cfg.split_seed, nuisance=nuisance, progress=progress)
    return encoder, embedded, pairs, splits


def embed_loaded(splits: dict, encoder, seed: int, *, nuisance: str = "", progress: bool = True) -> dict:
    """:func:`embed_splits` for splits already loaded (:func:`load_splits`) and a frozen
    :class:`~vrm_pyro.encoders.TextEncoder`: fit its order model on ``splits["train"]``, then
    ``{split: PairEmbeddings}``."""
    from vrm_pyro.encoders import embed_pairs

    fit_order_model(encoder, splits, seed, progress=progress)
    return {name: embed_pairs(part, encoder, nuisance=nuisance, progress=progress, desc=f"{name} pairs")
            for name, part in splits.items() if len(part) and name != "train_augmented"}


def lora_splits(splits: dict, encoder_cfg: EncoderConfig, seed: int, *, nuisance: str = ""):
    """A fresh LoRA-adapted encoder (seeded adapters) and the splits as :class:`TokenizedPairs` for it:
    each model of a run trains its own adapters on the same base, so the comparison stays fair."""
    import torch

    from vrm_pyro.encoders import TextEncoder, TokenizedPairs

    torch.manual_seed(seed)
    encoder = TextEncoder(encoder_cfg, use_cache=False)
    fit_order_model(encoder, splits, seed)
    return encoder, {name: TokenizedPairs(part, encoder, nuisance=nuisance) for name, part in splits.items() if len(part) and name != "train_augmented"}


RUN_FILE = "run.json"
RUN_SCHEMA = 1


def fit_and_evaluate(model_cfg: ModelConfig, train_cfg: TrainConfig, embedded: dict[str, PairEmbeddings],
                     *, name: str | None = None, checkpoint_dir: str | Path | None = None,
                     resume: bool = False, representation: str | None = None) -> RunResult:
    """Build from ``model_cfg``, fit on ``train`` with early stopping on ``validation``, test on ``test``.

    With ``checkpoint_dir`` the fit writes training snapshots there (and continues from the
    latest one when ``resume``). ``representation``: the features' (``EncoderConfig.representation``), for
    ``ModelConfig.path_prior="part"``."""
    train = embedded["train"]
    rm = build_reward_model(model_cfg, emb_dim=train.dim, response_dim=train.response_dim, seed=train_cfg.seed,
                            representation=representation)
    result = fit(rm, embedded["train"], embedded.get("validation"), train_cfg,
                 checkpoint_dir=checkpoint_dir, resume=resume)
    return RunResult(name or model_cfg.model, rm, result, _test_metrics(rm, embedded, train_cfg))


def _test_metrics(rm: RewardModel, embedded: dict, train_cfg: TrainConfig) -> dict:
    test = embedded.get("test") or embedded.get("validation")
    if test is not None and hasattr(test, "embeddings"):  # LoRA: embed with the trained adapters
        test = test.embeddings()
    return evaluate_pairs(rm, test, num_samples=train_cfg.eval_samples, seed=train_cfg.seed) if test is not None else {}


def read_run(output: str | Path) -> dict:
    """The ``run.json`` of a training run directory: its four configs and the baseline flag."""
    path = Path(output) / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no run to resume here (`vrm train --output {output}` writes it once the data "
                          "are read)")
    try:
        run = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if run.get("schema_version") != RUN_SCHEMA:
        raise ConfigError(f"{path}: schema_version {run.get('schema_version')!r} is not {RUN_SCHEMA}")
    return {"data_cfg": DataConfig.from_dict(run["data"], where=str(path)),
            "encoder_cfg": EncoderConfig.from_dict(run["encoder"], where=str(path)),
            "model_cfg": ModelConfig.from_dict(run["model"], where=str(path)),
            "train_cfg": TrainConfig.from_dict(run["train"], where=str(path)),
            "compare_baseline": bool(run["compare_baseline"])}


def train_and_evaluate(data_cfg: DataConfig, encoder_cfg: EncoderConfig, model_cfg: ModelConfig,
                       train_cfg: TrainConfig, *, output: str | Path | None = None,
                       compare_baseline: bool = True, progress: bool = True, resume: bool = False) -> ExperimentResult:
    """Fit ``model_cfg`` (and, for VRM, the Bradley–Terry baseline on the same splits); save checkpoints.

    Layout of ``output``::

        run.json                      the configs (what `vrm train --resume OUTPUT` reads)
        model/                        final checkpoint of the model (VRM)
        baseline/                     final checkpoint of the Bradley-Terry baseline
        checkpoints/{model,baseline}/ training snapshots (every --save-every steps, best marked)

    With ``resume``, a model whose final checkpoint exists is loaded instead of refitted and
    the others continue from their latest snapshot.
    """
    configs = [("model", model_cfg)]
    if compare_baseline and model_cfg.model != "bt":
        configs.append(("baseline", model_cfg.replace(model="bt")))
    for _, cfg in configs:  # fail on bad names (the baseline's too) before any encoding
        build_reward_model(cfg, emb_dim=8, response_dim=representation_dim(encoder_cfg.representation, 8),
                           representation=encoder_cfg.representation)
    main = is_main_process()  # under accelerate/torchrun only rank 0 writes
    # the data are read and the encoder (and its LM, if any) loaded before OUTPUT is touched: a run that cannot
    # start (a missing or malformed file, a missing model) must not overwrite the run.json of the run already
    # there, nor remove its snapshots
    from vrm_pyro.encoders import TextEncoder

    lora = encoder_cfg.mode == "lora"
    pairs, splits = load_splits(data_cfg)
    if lora:
        TextEncoder.check_loadable(encoder_cfg)  # its encoders are built per model, after run.json
    else:
        encoder = TextEncoder(encoder_cfg.replace(mode="frozen"))
    if output is not None and not resume and main:
        _write_run(Path(output), data_cfg, encoder_cfg, model_cfg, train_cfg, compare_baseline)
    if not lora:
        embedded = embed_loaded(splits, encoder, data_cfg.split_seed, nuisance=model_cfg.nuisance, progress=progress)
    sizes = {k: len(v) for k, v in splits.items()}
    if "train_augmented" in sizes:  # "train" counts the pairs of the data; augmented pairs apart
        sizes["train"] -= sizes["train_augmented"]
    result = ExperimentResult(split_sizes=sizes, skipped_rows=pairs.skipped)
    for slot, cfg in configs:
        path = Path(output) / slot if output is not None else None
        if lora:
            encoder, embedded = lora_splits(splits, encoder_cfg, train_cfg.seed, nuisance=model_cfg.nuisance)
        if resume and path is not None and (path / "config.json").is_file():
            ckpt = load_checkpoint(path)
            rm = ckpt.reward_model
            if ckpt.adapter is not None:
                encoder.load_adapter_state_dict(ckpt.adapter)
            if ckpt.order_model is not None:
                encoder.order_model = ckpt.order_model
            history = ckpt.metadata.get("history", [])
            run = RunResult(cfg.model, rm, FitResult(history=history, best_epoch=ckpt.metadata.get("best_epoch", -1)),
                            _test_metrics(rm, embedded, train_cfg), path)
            result.runs[cfg.model] = run
            continue
        snapshots = Path(output) / "checkpoints" / slot if output is not None else None
        run = fit_and_evaluate(cfg, train_cfg, embedded, name=cfg.model, checkpoint_dir=snapshots, resume=resume,
                               representation=encoder_cfg.representation)
        if path is not None and main:
            run.checkpoint = save_checkpoint(
                path, run.reward_model, encoder=encoder_cfg, encoder_identity=encoder.base_identity, train=train_cfg,
                adapter=encoder.adapter_state_dict() if lora else None, order_model=encoder.order_model,
                metadata={"data": data_cfg.to_dict(), "test_metrics": run.test, "best_epoch": run.fit.best_epoch,
                          "split_sizes": result.split_sizes, "history": run.fit.history,
                          **({"likelihood_identity": encoder.likelihood.identity}
                             if set(LIKELIHOOD_PARTS) & set(encoder_cfg.representation.split("+"))
                             else {})})
        result.runs[cfg.model] = run
    return result


def _write_run(output: Path, data_cfg, encoder_cfg, model_cfg, train_cfg, compare_baseline: bool) -> None:
    output.mkdir(parents=True, exist_ok=True)
    for stale in ("config.json", "model.safetensors"):  # a checkpoint saved directly here by an older version
        if (output / stale).exists():
            log.warning("%s holds a checkpoint of an older layout; removing %s (the model now goes to %s/model)",
                        output, stale, output)
            (output / stale).unlink()
    if (output / "checkpoints").exists():
        log.warning("%s already holds training snapshots; they are replaced (use --resume to continue them)", output)
        shutil.rmtree(output / "checkpoints")
    doc = {"schema_version": RUN_SCHEMA, "library": "vrm-pyro", "data": data_cfg.to_dict(),
           "encoder": encoder_cfg.to_dict(), "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
           "compare_baseline": compare_baseline}
    tmp = output / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, output / RUN_FILE)


def spurious_cue_experiment(model_configs: dict, train_config, *, agreements=(0.5, 0.7, 0.85, 1.0),
                            nuisance: float = 3.0, emb_dim: int = 32, num_objectives: int = 4,
                            train_prompts: int = 300, pairs_per_prompt: int = 8, test_prompts: int = 150,
                            seed: int = 0):
    """Train each model on synthetic data whose nuisance direction agrees with the label with
    probability ``a`` for every ``a`` in ``agreements``; test with the same ``a`` (in distribution)
    and with ``a = 0.5`` (cue uninformative, out of distribution). A DataFrame with columns
    ``model``, ``agreement``, ``acc_in``, ``acc_ood``, ``drop``."""
    import pandas as pd
    import torch

    from vrm_pyro.synthetic import SyntheticProcess

    proc = SyntheticProcess(emb_dim=emb_dim, num_objectives=num_objectives, seed=seed)
    rows = []
    for a in agreements:
        kw = {"nuisance": nuisance, "cue_agreement": a}
        train = proc.sample(train_prompts, pairs_per_prompt, seed=seed + 11, **kw).pairs
        val = proc.sample(max(test_prompts // 3, 10), pairs_per_prompt, seed=seed + 12, **kw).pairs
        test_in = proc.sample(test_prompts, pairs_per_prompt, seed=seed + 13, **kw).pairs
        test_ood = proc.sample(test_prompts, pairs_per_prompt, seed=seed + 13, nuisance=nuisance, cue_agreement=0.5).pairs
        for name, cfg in model_configs.items():
            torch.manual_seed(seed)
            rm = build_reward_model(cfg, emb_dim=emb_dim, seed=train_config.seed, representation="joint")
            fit(rm, train, val, train_config)
            acc_in = evaluate_pairs(rm, test_in, num_samples=train_config.eval_samples)["accuracy"]
            acc_ood = evaluate_pairs(rm, test_ood, num_samples=train_config.eval_samples)["accuracy"]
            rows.append({"model": name, "agreement": a, "acc_in": acc_in, "acc_ood": acc_ood, "drop": acc_in - acc_ood})
    return pd.DataFrame(rows)
