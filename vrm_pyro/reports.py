"""Reports on fitted checkpoints, written to an output directory: what the ``vrm eval``,
``vrm length-bias``, ``vrm best-of-n``, ``vrm spurious`` and ``vrm objectives`` commands run.

Each function evaluates the model *and* its Bradley–Terry baseline side by side (a run directory
``vrm train --output DIR`` holds both), writes Markdown + JSON (+ CSV) and PNG plots, and returns
the numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vrm_pyro.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint_dir
from vrm_pyro.config import DataConfig
from vrm_pyro.data import PairEmbeddings, PreferencePairs
from vrm_pyro.errors import CheckpointError, DataError
from vrm_pyro.evaluate import (
    accuracy_by_uncertainty,
    group_breakdown,
    pairwise_metrics,
    predict_pairs,
    reliability_bins,
)
from vrm_pyro.formats import load_from_config
from vrm_pyro.hacking import length_bias
from vrm_pyro.jsontext import json_text
from vrm_pyro.reward_model import gamma_cells

log = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    """Side-by-side evaluation of several reward models on the same pairs.

    ``metrics[name]``: accuracy, nll, brier, ece (against the labels as given, hard or soft),
    ``nll_hard``/``brier_hard`` (against the rounded labels), and length-bias figures when texts
    are known; ``reliability[name]``: :func:`reliability_bins`; ``uncertainty[name]``:
    :func:`accuracy_by_uncertainty` over VRM's own uncertainty about the preferred side, the
    posterior probability that ``r_a - r_b`` has the other sign than its mean (``std`` alone grows
    with the size of the difference, so it is reported in the JSON but not binned); ``margin[name]``:
    over ``|E[r_a - r_b]|`` (every model); ``groups``: :func:`group_breakdown` per model.
    """

    metrics: dict[str, dict] = field(default_factory=dict)
    reliability: dict[str, dict] = field(default_factory=dict)
    uncertainty: dict[str, Any] = field(default_factory=dict)
    margin: dict[str, Any] = field(default_factory=dict)
    groups: Any = None
    group_column: str | None = None
    info: dict = field(default_factory=dict)
    nuisance: dict[str, list] = field(default_factory=dict)

    #: the headline columns of :meth:`table`: (metric key, header)
    TABLE = (("accuracy", "acc"), ("accuracy_authentic", "acc auth"), ("nll", "nll"), ("brier", "brier"),
             ("ece", "ece"), ("length_spearman", "len rho"), ("acc_shorter_preferred", "acc short"))

    def table(self) -> str:
        """The headline numbers as a plain-text table under 100 columns, one row per model (``acc auth``:
        ranked by the authentic reward alone, without the judge's nuisance term; ``len rho``: Spearman of
        reward and length; ``acc short``: accuracy where the shorter answer was preferred)."""
        lines = [f"{'model':<12}" + "".join(f"{h:>11}" for _, h in self.TABLE)]
        for name, m in self.metrics.items():
            lines.append(f"{name[:12]:<12}" + "".join(f"{m.get(k, float('nan')):>11.4f}" for k, _ in self.TABLE))
        return "\n".join(lines)

    def to_json(self) -> dict:
        def frame(df):
            return None if df is None else df.to_dict(orient="records")

        return {"info": self.info, "metrics": self.metrics, "nuisance_posterior": self.nuisance,
                "reliability": {k: {kk: np.asarray(vv).tolist() for kk, vv in v.items()} for k, v in self.reliability.items()},
                "accuracy_by_uncertainty": {k: frame(v) for k, v in self.uncertainty.items()},
                "accuracy_by_margin": {k: frame(v) for k, v in self.margin.items()},
                "group_column": self.group_column, "groups": frame(self.groups)}

    def save(self, output_dir: str | Path) -> Path:
        """Write ``report.md``, ``report.json``, ``reliability.png``, ``uncertainty.png`` (and ``groups.csv``)."""
        from vrm_pyro.plots import accuracy_vs_uncertainty_plot, reliability_diagram

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json_text(self.to_json(), indent=2, default=float))
        reliability_diagram(self.reliability, path=out / "reliability.png")
        accuracy_vs_uncertainty_plot(self.uncertainty, self.margin, path=out / "uncertainty.png")
        md = ["# Evaluation report", ""]
        md += [f"- {k}: {v}" for k, v in self.info.items()]
        md += ["", "## Metrics", "", _markdown_table(self.metrics), "",
               "Accuracy and ECE use decided pairs (label != 0.5) against the rounded label; NLL and Brier use the "
               "labels as given (soft where soft), `nll_hard`/`brier_hard` the rounded labels.", "",
               "![reliability](reliability.png)", ""]
        for name, rows in self.nuisance.items():
            md += [f"## The judge's nuisance coefficients ({name})", "",
                   "Posterior of gamma: logits of the judge's preference per doubling of each covariate "
                   "(`log2` counts), and per standard deviation in the training responses.", "",
                   "| covariate | logits per doubling | sd | logits per sd |", "|---|---|---|---|"]
            md += ["| {} | {} | {} | {} |".format(r["covariate"], *gamma_cells(r)) for r in rows]
            md.append("")
        md += ["## Accuracy vs the model's own uncertainty", ""]
        for name, df in self.uncertainty.items():
            md += [f"**{name}** (bins of q(r_a - r_b has the other sign than its mean), low to high)", "",
                   frame_markdown(df), ""]
        for name, df in self.margin.items():
            md += [f"**{name}** (bins of the margin |E[r_a - r_b]|, high to low)", "", frame_markdown(df), ""]
        md += ["![uncertainty](uncertainty.png)", ""]
        if self.groups is not None and len(self.groups):
            self.groups.to_csv(out / "groups.csv", index=False)
            md += [f"## By {self.group_column}", "", frame_markdown(self.groups), ""]
        (out / "report.md").write_text("\n".join(md))
        return out


def frame_markdown(df) -> str:
    """A pandas DataFrame as a Markdown table (floats to 4 decimals)."""
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float | np.floating) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _markdown_table(metrics: dict[str, dict]) -> str:
    keys = list(dict.fromkeys(k for m in metrics.values() for k in m))
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, m in metrics.items():
        cells = [f"{m[k]:.4f}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_models(models: dict, pairs: PairEmbeddings, *, texts=None, group_column: str | None = None,
                    num_samples: int = 32, seed: int = 0, bins: int = 10, uncertainty_bins: int = 5,
                    info: dict | None = None) -> EvaluationReport:
    """Evaluate several reward models (e.g. ``{"vrm": ..., "bt": ...}``) on the same embedded pairs.

    ``texts``: the :class:`~vrm_pyro.data.PreferencePairs` the embeddings came from; with it the
    report adds length-bias figures and, with ``group_column`` (a field kept in ``texts.meta``), a
    breakdown per group.
    """
    report = EvaluationReport(group_column=group_column, info=dict(info or {}, pairs=len(pairs)))
    frames = []
    for name, rm in models.items():
        pred = predict_pairs(rm, pairs, num_samples=num_samples, seed=seed)
        hard = (pred.label > 0.5).astype(np.float64)
        metrics = pairwise_metrics(pred.prob, pred.label, bins=bins)
        hard_m = pairwise_metrics(pred.prob, np.where(pred.label == 0.5, 0.5, hard), bins=bins)
        metrics.update(nll_hard=hard_m["nll"], brier_hard=hard_m["brier"])
        if rm.model.nuisance is not None:  # the authentic reward alone, without the judge's nuisance term
            authentic = predict_pairs(rm, pairs, num_samples=num_samples, seed=seed, include_nuisance=False)
            metrics["accuracy_authentic"] = pairwise_metrics(authentic.prob, authentic.label, bins=bins)["accuracy"]
            report.nuisance[name] = rm.nuisance_posterior()
        else:
            metrics["accuracy_authentic"] = metrics["accuracy"]
        if texts is not None:
            metrics.update(length_bias(rm, pairs, texts, num_samples=num_samples))
        report.metrics[name] = metrics
        report.reliability[name] = reliability_bins(pred.prob, pred.label, bins=bins)
        if rm.has_latents:
            report.uncertainty[name] = accuracy_by_uncertainty(pred.prob, pred.label, pred.sign_flip, bins=uncertainty_bins,
                                                               name="sign_flip")
            metrics["corr_std_margin"] = float(np.corrcoef(pred.diff_std, np.abs(pred.diff_mean))[0, 1])
        report.margin[name] = accuracy_by_uncertainty(pred.prob, pred.label, np.abs(pred.diff_mean),
                                                      bins=uncertainty_bins, name="margin", descending=True)
        if texts is not None and group_column is not None:
            df = group_breakdown(pred.prob, pred.label, group_values(texts, group_column))
            df.insert(0, "model", name)
            frames.append(df)
    if frames:
        import pandas as pd

        report.groups = pd.concat(frames, ignore_index=True)
    return report


def group_values(texts: PreferencePairs, group_column: str) -> list:
    """Each pair's value of the kept field ``group_column`` (None where a row lacks it); a
    :class:`~vrm_pyro.errors.DataError` naming the fields there are when no row has it."""
    values = [m.get(group_column) for m in texts.meta]
    if all(v is None for v in values):
        raise DataError(f"no row has a '{group_column}' field (fields kept: "
                        f"{sorted(texts.meta[0]) if texts.meta else []})", source=str(texts.source), field=group_column)
    return values


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
        ids = [c.order_model.identity if c.order_model is not None else None for c in (main, other)]
        if ids[0] != ids[1]:
            raise CheckpointError(f"{path} and {checkpoint} have different sentence-order models (order_score: "
                                  f"{ids[1]} vs {ids[0]}); they share one encoder here, so compare models trained "
                                  "in the same run (vrm train fits one order model for the model and its baseline)")
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
    """:func:`evaluate_models` of the model and its baseline on ``data``; saved to ``output_dir``."""
    from vrm_pyro.encoders import embed_pairs

    models, encoder, main = load_models(checkpoint, baseline, device=device, cache_dir=cache_dir)
    pairs, info = eval_pairs(main, data, format=format, split=split, limit=limit, skip_invalid=skip_invalid)
    if group_column is not None:
        group_values(pairs, group_column)  # a missing field fails now, not after encoding every text
    embedded = embed_pairs(pairs, encoder, nuisance=main.reward_model.config.nuisance)
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
    from vrm_pyro.hacking import length_perturbation

    models, encoder, main = load_models(checkpoint, baseline, device=device, cache_dir=cache_dir)
    pairs, info = eval_pairs(main, data, format=format, split=split, limit=limit, skip_invalid=skip_invalid)
    embedded = embed_pairs(pairs, encoder, nuisance=main.reward_model.config.nuisance)
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
        (out / "length_bias.json").write_text(json_text(result, indent=2))
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
                     device="cpu", cache_dir=None, select: str = "mean", kappa: float = 1.0, held_out_from=None):
    """Best-of-N curve of the model, its baseline, and the random / longest / oracle picks. ``select``:
    ``mean`` (pick by the posterior mean reward), ``lcb`` (by ``reward - kappa * reward_std``) or ``both``
    (a curve for each; models without an epistemic std pick by the mean either way). ``held_out_from``: a run
    or checkpoint; only the prompts outside its training and validation splits are kept."""
    from vrm_pyro.hacking import best_of_n_curve, load_best_of_n, score_best_of_n
    from vrm_pyro.plots import best_of_n_plot

    bon = load_best_of_n(input_path)
    if held_out_from is not None:
        bon = bon.subset(held_out_indices(bon.prompts, held_out_from, input_path))
    models, encoder, _ = load_models(checkpoint, baseline, device=device, cache_dir=cache_dir)
    rewards = {}
    for name, rm in models.items():
        if select in ("mean", "both"):
            rewards[name] = score_best_of_n(rm, encoder, bon, num_samples=num_samples)
        if select in ("lcb", "both") and rm.has_reward_std:
            rewards[f"{name} lcb(k={kappa:g})"] = score_best_of_n(rm, encoder, bon, num_samples=num_samples,
                                                                    kappa=kappa)
        elif select == "lcb":
            rewards[name] = score_best_of_n(rm, encoder, bon, num_samples=num_samples)
    curve = best_of_n_curve(bon, rewards, ns)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        curve.to_csv(out / "best_of_n.csv", index=False)
        best_of_n_plot(curve, path=out / "best_of_n.png",
                       title=f"Best-of-N on {len(bon)} prompts ({Path(input_path).name})")
        wide = curve.pivot(index="n", columns="method", values="gold").reset_index()
        (out / "best_of_n.md").write_text(f"# Best-of-N\n\n{len(bon)} prompts from {input_path}; mean gold score of "
                                          "the pick (exact expectation over random n-subsets).\n\n"
                                          + frame_markdown(wide) + "\n\n![best-of-n](best_of_n.png)\n")
    return curve


def training_prompts(main: Checkpoint) -> set[str]:
    """The prompts a checkpoint's run trained or selected on (its training and validation splits)."""
    seen: set[str] = set()
    for split in ("train", "validation"):
        pairs, _ = eval_pairs(main, split=split)
        seen.update(pairs.prompt)
    return seen


def held_out_indices(prompts: list[str], held_out_from, source) -> list[int]:
    """The indices of ``prompts`` outside the training and validation splits of the run or checkpoint
    ``held_out_from`` (``--held-out-from``); a DataError when there are none."""
    seen = training_prompts(load_checkpoint(held_out_from))
    keep = [i for i, p in enumerate(prompts) if p not in seen]
    if not keep:
        raise DataError(f"every prompt of the input was used in training by {held_out_from}", source=str(source))
    return keep


def stress_report(checkpoint, input_path, output_dir=None, *, baseline=None, kinds="all", held_out_from=None,
                  limit=None, num_samples=32, device="cpu", cache_dir=None, seed=0):
    """:func:`vrm_pyro.hacking.stress_test` of the model and its baseline on junk made from the real answers in
    ``input_path`` (only prompts outside the training/validation split of ``held_out_from``): a DataFrame
    with one row per (model, kind); saved as stress.md/.csv/.png in ``output_dir``."""
    import pandas as pd

    from vrm_pyro.hacking import load_stress_rows, stress_kinds, stress_set, stress_test
    from vrm_pyro.plots import stress_plot

    kinds = stress_kinds(kinds)  # a bad name fails before anything is loaded
    prompts, responses = load_stress_rows(input_path)
    models, encoder, main = load_models(checkpoint, baseline, device=device, cache_dir=cache_dir)
    if held_out_from is not None:
        keep = held_out_indices(prompts, held_out_from, input_path)
        prompts, responses = [prompts[i] for i in keep], [responses[i] for i in keep]
    if limit is not None:
        prompts, responses = prompts[:limit], responses[:limit]
    stress = stress_set(prompts, responses, kinds, seed=seed)
    frames = []
    for name, rm in models.items():
        df = stress_test(rm, encoder, stress, num_samples=num_samples)
        df.insert(0, "model", name)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "stress.csv", index=False)
        stress_plot(table, path=out / "stress.png", title=f"Junk vs the real answer ({len(prompts)} prompts)")
        (out / "stress.md").write_text(
            f"# Stress test\n\n{len(prompts)} real answers from {input_path}"
            + (f", prompts held out from {held_out_from}" if held_out_from else "") + ". `junk_wins`: share of junk "
            "answers whose reward is at or above the real answer they were made from; `margin`: median real - junk "
            "reward.\n\n" + frame_markdown(table) + "\n\n![stress](stress.png)\n")
    return table


def spurious_report(output_dir=None, *, model_configs=None, train_config=None, **kwargs):
    """:func:`vrm_pyro.experiment.spurious_cue_experiment` (VRM vs baseline by default) as table + plot."""
    from vrm_pyro.config import ModelConfig, TrainConfig
    from vrm_pyro.experiment import spurious_cue_experiment
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
    from vrm_pyro.formats import load_score_rows
    from vrm_pyro.inspect import objective_report, objective_report_markdown
    from vrm_pyro.scoring import encoder_for

    ckpt = load_checkpoint(checkpoint, device=device)
    rows = [row for _, row in load_score_rows(str(input_path))]
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    encoder = encoder_for(ckpt, cache_dir=cache_dir, device=device)
    from vrm_pyro.representations import response_features

    prompt_emb = encoder.encode(prompts)
    features = response_features(encoder, prompts, responses, spec=encoder.config.representation, prompt_emb=prompt_emb)
    report = objective_report(ckpt.reward_model, prompts, prompt_emb, responses, features, top=top)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "objectives.json").write_text(json_text(report, indent=2, ensure_ascii=False))
        (out / "objectives.md").write_text(objective_report_markdown(report))
    return report
