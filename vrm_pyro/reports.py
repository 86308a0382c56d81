"""Reports on fitted checkpoints, written to an output directory: what the ``vrm eval``,
``vrm length-bias``, ``vrm best-of-n``, ``vrm spurious`` and ``vrm objectives`` commands run.

Each function evaluates the model *and* its Bradley–Terry baseline side by side (a run directory
``vrm train --output DIR`` holds both), writes Markdown + JSON (+ CSV) and PNG plots, and returns
the numbers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from vrm_pyro.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint_dir
from vrm_pyro.config import DataConfig
from vrm_pyro.data import PreferencePairs, load_from_config
from vrm_pyro.errors import CheckpointError

log = logging.getLogger(__name__)


def load_models(checkpoint: str | Path, baseline: str | Path | None = None, *, device: str = "cpu",
                cache_dir: str | None = None):
    """The checkpoint's model and its baseline (``baseline``, or ``DIR/baseline`` of a run directory),
    and their shared encoder. Returns ``({name: RewardModel}, encoder, main Checkpoint)``."""
    from vrm_pyro.scoring import encoder_for

    main = load_checkpoint(checkpoint, device=device)
    ckpts: dict[str, Checkpoint] = {main.reward_model.kind: main}
    run_baseline = Path(checkpoint) / "baseline"
    path = baseline if baseline is not None else (run_baseline if (run_baseline / "config.json").is_file() else None)
    if path is not None and resolve_checkpoint_dir(path) != resolve_checkpoint_dir(checkpoint):
        other = load_checkpoint(path, device=device)
        if other.encoder_identity != main.encoder_identity:
            raise CheckpointError(f"{path} was trained on encoder {other.encoder_identity!r}, {checkpoint} on "
                                  f"{main.encoder_identity!r}; compare models on the same encoder")
        name = other.reward_model.kind if other.reward_model.kind not in ckpts else "baseline"
        ckpts[name] = other
    encoder = encoder_for(main, cache_dir=cache_dir, device=device)
    return {k: c.reward_model for k, c in ckpts.items()}, encoder, main


def eval_pairs(main: Checkpoint, data: str | None = None, *, format: str = "auto", split: str | None = None,
               limit: int | None = None, skip_invalid: bool = False) -> tuple[PreferencePairs, dict]:
    """The pairs to evaluate on: ``data`` (all of it by default) or the checkpoint's own training data
    split exactly as in training (its test split by default). Returns ``(pairs, description)``."""
    if data is None:
        meta = main.metadata.get("data") or {}
        cfg = DataConfig.from_dict(meta) if meta else DataConfig()
        split = split or "test"
    else:
        cfg = DataConfig(data=data, format=format, limit=limit, skip_invalid=skip_invalid)
        split = split or "all"
    pairs = load_from_config(cfg)
    if split != "all":
        pairs = pairs.split_by_prompt(cfg.val_fraction, cfg.test_fraction, cfg.split_seed)[split]
    return pairs, {"data": str(cfg.data or "bundled HH-RLHF slice"), "split": split}


def evaluation_report(checkpoint, output_dir=None, *, baseline=None, data=None, format="auto", split=None,
                      limit=None, skip_invalid=False, group_column=None, num_samples=32, device="cpu", cache_dir=None):
    """:func:`vrm_pyro.evaluate.evaluate_models` of the model and its baseline on ``data``; saved to ``output_dir``."""
    from vrm_pyro.encoders import embed_pairs
    from vrm_pyro.evaluate import evaluate_models

    models, encoder, main = load_models(checkpoint, baseline, device=device, cache_dir=cache_dir)
    pairs, info = eval_pairs(main, data, format=format, split=split, limit=limit, skip_invalid=skip_invalid)
    embedded = embed_pairs(pairs, encoder)
    report = evaluate_models(models, embedded, texts=pairs, group_column=group_column, num_samples=num_samples,
                             info={"checkpoint": str(checkpoint), **info})
    if output_dir is not None:
        report.save(output_dir)
    return report


def length_bias_report(checkpoint, output_dir=None, *, baseline=None, data=None, format="auto", split=None,
                       limit=None, skip_invalid=False, padding_samples=200, num_samples=32, device="cpu",
                       cache_dir=None, seed=0) -> dict:
    """Length figures (:func:`vrm_pyro.hacking.length_bias` and :func:`~vrm_pyro.hacking.length_perturbation`
    on up to ``padding_samples`` responses) for the model and its baseline."""
    from vrm_pyro.encoders import embed_pairs
    from vrm_pyro.hacking import length_bias, length_perturbation

    models, encoder, main = load_models(checkpoint, baseline, device=device, cache_dir=cache_dir)
    pairs, info = eval_pairs(main, data, format=format, split=split, limit=limit, skip_invalid=skip_invalid)
    embedded = embed_pairs(pairs, encoder)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pairs), size=min(padding_samples, len(pairs)), replace=False)
    prompts = [pairs.prompt[i] for i in pick]
    responses = [pairs.response_a[i] for i in pick]
    result = {"info": {"checkpoint": str(checkpoint), "pairs": len(pairs), **info}, "models": {}}
    for name, rm in models.items():
        result["models"][name] = {**length_bias(rm, embedded, pairs, num_samples=num_samples),
                                  **length_perturbation(rm, encoder, prompts, responses, num_samples=num_samples)}
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "length_bias.json").write_text(json.dumps(result, indent=2))
        keys = list(next(iter(result["models"].values())))
        md = ["# Length bias", "", *(f"- {k}: {v}" for k, v in result["info"].items()), "",
              "| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        md += [f"| {n} | " + " | ".join(f"{m[k]:.4f}" if isinstance(m[k], float) else str(m[k]) for k in keys) + " |"
               for n, m in result["models"].items()]
        md += ["", "`length_spearman`: reward vs words over all responses. `acc_shorter_preferred`: accuracy on the "
               "pairs whose preferred response is the shorter one. `padding_delta_sd`: reward(response + content-free "
               "filler) - reward(response), in standard deviations of the reward; `padding_gain_fraction`: share of "
               "responses whose reward rises when padded."]
        (out / "length_bias.md").write_text("\n".join(md) + "\n")
    return result


def best_of_n_report(checkpoint, input_path, output_dir=None, *, baseline=None, ns=None, num_samples=32,
                     device="cpu", cache_dir=None):
    """Best-of-N curve of the model, its baseline, and the random / longest / oracle picks."""
    from vrm_pyro.hacking import best_of_n_curve, load_best_of_n, score_best_of_n
    from vrm_pyro.plots import best_of_n_plot

    bon = load_best_of_n(input_path)
    models, encoder, _ = load_models(checkpoint, baseline, device=device, cache_dir=cache_dir)
    rewards = {name: score_best_of_n(rm, encoder, bon, num_samples=num_samples) for name, rm in models.items()}
    curve = best_of_n_curve(bon, rewards, ns)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        curve.to_csv(out / "best_of_n.csv", index=False)
        best_of_n_plot(curve, path=out / "best_of_n.png",
                       title=f"Best-of-N on {len(bon)} prompts ({Path(input_path).name})")
        wide = curve.pivot(index="n", columns="method", values="gold").reset_index()
        from vrm_pyro.evaluate import frame_markdown

        (out / "best_of_n.md").write_text(f"# Best-of-N\n\n{len(bon)} prompts from {input_path}; mean gold score of "
                                          "the pick (exact expectation over random n-subsets).\n\n"
                                          + frame_markdown(wide) + "\n\n![best-of-n](best_of_n.png)\n")
    return curve


def spurious_report(output_dir=None, *, model_configs=None, train_config=None, **kwargs):
    """:func:`vrm_pyro.hacking.spurious_cue_experiment` (VRM vs baseline by default) as table + plot."""
    from vrm_pyro.config import ModelConfig, TrainConfig
    from vrm_pyro.evaluate import frame_markdown
    from vrm_pyro.hacking import spurious_cue_experiment
    from vrm_pyro.plots import spurious_cue_plot

    model_configs = model_configs or {"vrm": ModelConfig(num_objectives=4, feature_dim=4, hidden_dim=64),
                                      "bt": ModelConfig(model="bt")}
    train_config = train_config or TrainConfig(epochs=30, lr=3e-3, patience=5, progress=False)
    df = spurious_cue_experiment(model_configs, train_config, **kwargs)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "spurious.csv", index=False)
        spurious_cue_plot(df, path=out / "spurious.png")
        (out / "spurious.md").write_text("# Spurious-cue test bed\n\nTrain: the nuisance cue agrees with the label "
                                         "with probability `agreement`; OOD test: agreement 0.5.\n\n"
                                         + frame_markdown(df) + "\n\n![spurious](spurious.png)\n")
    return df


def objectives_report_file(checkpoint, input_path, output_dir=None, *, top=5, device="cpu", cache_dir=None) -> dict:
    """:func:`vrm_pyro.inspect.objective_report` on ``{"prompt", "response"}`` rows."""
    from vrm_pyro.data import load_score_rows
    from vrm_pyro.inspect import objective_report, objective_report_markdown
    from vrm_pyro.scoring import encoder_for

    ckpt = load_checkpoint(checkpoint, device=device)
    rows = [row for _, row in load_score_rows(str(input_path))]
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    encoder = encoder_for(ckpt, cache_dir=cache_dir, device=device)
    report = objective_report(ckpt.reward_model, prompts, encoder.encode(prompts), responses,
                              encoder.encode(prompts, responses), top=top)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "objectives.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
        (out / "objectives.md").write_text(objective_report_markdown(report))
    return report
