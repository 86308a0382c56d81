"""The ``vrm`` command: train, score, evaluate, stress-test, inspect and serve reward models.

Options of ``vrm train`` come from the config dataclasses through
:class:`transformers.HfArgumentParser` (``--num-objectives`` is ``ModelConfig.num_objectives``,
help text included), as in TRL's scripts; every command only calls the Python API.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from vrm_pyro.config import RECIPES, DataConfig, EncoderConfig, ModelConfig, TrainConfig
from vrm_pyro.errors import ConfigError, VRMError
from vrm_pyro.jsontext import json_text

CONFIGS = (DataConfig, EncoderConfig, ModelConfig, TrainConfig)


def _flag(f: dataclasses.Field) -> str:
    aliases = f.metadata.get("aliases")
    return aliases[0] if aliases else "--" + f.name.replace("_", "-")


def configs_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The four configs from a parsed ``vrm train`` namespace (what ``HfArgumentParser`` would build)."""
    values = vars(args)
    return {cls.__name__: cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)}) for cls in CONFIGS}


# ----------------------------------------------------------------------------- commands


def _resume_configs(args, cfg: dict) -> dict:
    """The saved configs of the run in ``--resume DIR``; options given beside it must agree with them."""
    from vrm_pyro.experiment import read_run

    if args.recipe != "default":
        raise ConfigError(f"--resume {args.resume} continues the run with its saved configuration; drop --recipe "
                          f"{args.recipe} (a recipe sets the defaults of a new run)")
    saved = read_run(args.resume)
    by_class = {"DataConfig": saved["data_cfg"], "EncoderConfig": saved["encoder_cfg"],
                "ModelConfig": saved["model_cfg"], "TrainConfig": saved["train_cfg"]}
    conflicts = []
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            given, stored = getattr(cfg[cls.__name__], f.name), getattr(by_class[cls.__name__], f.name)
            default = RECIPES[args.recipe].get(f.name, f.default)  # what the parser fills in when the option is absent
            if given != default and given != stored and f.name != "progress":
                conflicts.append(f"{_flag(f)} {given!r} (the run has {stored!r})")
    if conflicts:
        raise ConfigError(f"--resume {args.resume} continues the run with its saved configuration "
                          f"({Path(args.resume) / 'run.json'}); drop these options: {'; '.join(conflicts)}")
    by_class["TrainConfig"] = by_class["TrainConfig"].replace(progress=cfg["TrainConfig"].progress)
    return {**by_class, "compare_baseline": saved["compare_baseline"]}


def cmd_train(args) -> int:
    from vrm_pyro.experiment import train_and_evaluate
    from vrm_pyro.train import is_main_process

    cfg = configs_from_args(args)
    baseline, output = args.baseline, args.output
    if args.resume:
        cfg = _resume_configs(args, cfg)
        baseline, output = cfg["compare_baseline"], args.resume
    result = train_and_evaluate(cfg["DataConfig"], cfg["EncoderConfig"], cfg["ModelConfig"], cfg["TrainConfig"],
                                output=output, compare_baseline=baseline,
                                progress=cfg["TrainConfig"].progress, resume=bool(args.resume))
    if not is_main_process():  # other ranks of a multi-process run stay quiet
        return 0
    sizes = result.split_sizes
    print(f"pairs: train {sizes.get('train', 0)}, validation {sizes.get('validation', 0)}, "
          f"test {sizes.get('test', 0)} (split by prompt)" + (f"; skipped {result.skipped_rows} invalid rows"
                                                              if result.skipped_rows else ""))
    print(result.table())
    for name, run in result.runs.items():
        if run.checkpoint is not None:
            print(f"{name} checkpoint: {run.checkpoint}")
    return 0


def _report_options(args) -> dict:
    """The options `vrm eval` and `vrm length-bias` share (see ``data_options`` in the parser)."""
    return dict(baseline=args.baseline, data=args.data, format=args.format, split=args.split, limit=args.data_limit,
                skip_invalid=args.skip_invalid, num_samples=args.num_samples, device=args.device,
                cache_dir=args.cache_dir)


def _gamma_text(row: dict, digits: int) -> str:
    """``+0.12 ± 0.03`` (posterior mean ± sd), or why there is none."""
    from vrm_pyro.reward_model import gamma_cells

    mean, sd, _ = gamma_cells(row, digits)
    return f"{mean} ± {sd}" if sd else mean


def cmd_eval(args) -> int:
    from vrm_pyro.reports import evaluation_report

    report = evaluation_report(args.checkpoint, args.output, group_column=args.group_column, **_report_options(args))
    print(f"{report.info['pairs']} pairs of {report.info['data']} ({report.info['split']})")
    print(report.table())
    for name, rows in report.nuisance.items():
        print(f"{name}: the judge pays, in logits per doubling (posterior mean ± sd):")
        for r in rows:
            print(f"    {r['covariate']:<12} {_gamma_text(r, 2)}")
    if report.groups is not None:
        print(report.groups.to_string(index=False, max_colwidth=30, float_format=lambda v: f"{v:.4f}"))
    if args.output:
        print(f"report -> {args.output}/report.md, report.json, reliability.png, uncertainty.png")
    return 0


def cmd_length_bias(args) -> int:
    from vrm_pyro.reports import length_bias_report

    result = length_bias_report(args.checkpoint, args.output, padding_samples=args.padding_samples,
                                **_report_options(args))
    print(json_text(result["models"], indent=2))
    return 0


def cmd_best_of_n(args) -> int:
    from vrm_pyro.reports import best_of_n_report

    curve = best_of_n_report(args.checkpoint, args.input, args.output, baseline=args.baseline, ns=args.n,
                             num_samples=args.num_samples, device=args.device, cache_dir=args.cache_dir,
                             select=args.select, kappa=args.kappa, held_out_from=args.held_out_from)
    print(curve.pivot(index="n", columns="method", values="gold").to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_best_of_n_data(args) -> int:
    from vrm_pyro.formats import load_pairs
    from vrm_pyro.hacking import best_of_n_from_alpaca_eval

    pairs = load_pairs(args.alpaca_eval, "alpaca_eval", skip_invalid=True)
    instructions = None
    if args.held_out_from:
        from vrm_pyro.checkpoint import load_checkpoint
        from vrm_pyro.reports import eval_pairs

        held, _ = eval_pairs(load_checkpoint(args.held_out_from), split="test")
        instructions = set(held.prompt)
    bon = best_of_n_from_alpaca_eval(pairs, instructions=instructions, min_candidates=args.min_candidates)
    bon.save(args.output)
    print(f"{len(bon)} prompts, {sum(map(len, bon.responses))} candidates (at least {bon.max_n} each) -> {args.output}")
    return 0


def cmd_spurious(args) -> int:
    from vrm_pyro.reports import spurious_report

    df = spurious_report(args.output, agreements=tuple(args.agreements), nuisance=args.nuisance, seed=args.seed,
                         train_prompts=args.train_prompts)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_stress(args) -> int:
    from vrm_pyro.reports import stress_report

    table = stress_report(args.checkpoint, args.input, args.output, baseline=args.baseline, kinds=args.kinds,
                          held_out_from=args.held_out_from, limit=args.limit, num_samples=args.num_samples,
                          device=args.device, cache_dir=args.cache_dir, seed=args.seed)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.output:
        print(f"report -> {args.output}/stress.md, stress.csv, stress.png")
    return 0


def cmd_objectives(args) -> int:
    from vrm_pyro.inspect import correlation_text
    from vrm_pyro.reports import objectives_report_file

    report = objectives_report_file(args.checkpoint, args.input, args.output, top=args.top, device=args.device,
                                    cache_dir=args.cache_dir)
    for name, r in report.items():
        corr = ", ".join(f"{k} {correlation_text(v)}" for k, v in r["score_correlation"].items())
        print(f"{name}: mean weight {r['mean_weight']:.3f}; score correlation: {corr}")
    if args.output:
        print(f"report -> {args.output}/objectives.md")
    return 0


def cmd_score(args) -> int:
    from vrm_pyro.scoring import score_file

    n = score_file(args.checkpoint, args.input, args.output, chunk_size=args.chunk_size,
                   num_samples=args.num_samples, cache_dir=args.cache_dir, device=args.device, resume=args.resume,
                   use_cache=args.cache, kappa=args.kappa, include_nuisance=args.include_nuisance)
    print(f"scored {n} rows -> {args.output}")
    return 0


def cmd_inspect(args) -> int:
    from vrm_pyro.inspect import inspect_file

    table = inspect_file(args.checkpoint, args.input, args.output, plot=args.plot, cache_dir=args.cache_dir,
                         device=args.device, level=args.level, clusters=args.clusters)
    means = [c for c in table.columns if c == "prompt" or c == "cluster" or (c.startswith("w") and c[1:].isdigit())]
    print(table[means].head(20).to_string(max_colwidth=40, float_format=lambda v: f"{v:.3f}"))
    print(f"posterior weights of {len(table)} prompts -> {args.output}" + (f", heatmap -> {args.plot}" if args.plot else ""))
    from vrm_pyro.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint, device=args.device)
    for r in ckpt.reward_model.nuisance_posterior() or []:
        print(f"judge, logits per doubling of {r['covariate']}: {_gamma_text(r, 3)}")
    if args.compare:
        from vrm_pyro.inspect import compare_prompts
        from vrm_pyro.scoring import encoder_for

        i, j = args.compare
        if not (0 <= i < len(table) and 0 <= j < len(table)):
            raise ConfigError(f"--compare {i} {j}: the input has prompts 0..{len(table) - 1}")
        emb = encoder_for(ckpt, cache_dir=args.cache_dir, device=args.device).encode([table.prompt[i], table.prompt[j]])
        print(f"prompt A [{i}]: {table.prompt[i][:80]!r}\nprompt B [{j}]: {table.prompt[j][:80]!r}")
        print(compare_prompts(ckpt.reward_model, emb[0], emb[1], level=args.level).to_string(
            index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_serve(args) -> int:
    from vrm_pyro.serving import ServeConfig, serve

    serve(ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)}))
    return 0


# ----------------------------------------------------------------------------- the parser


def build_parser(recipe: str = "default") -> argparse.ArgumentParser:
    """The ``vrm`` parser; ``vrm train``'s defaults are those of ``RECIPES[recipe]`` (``--recipe``)."""
    from transformers import HfArgumentParser

    parser = argparse.ArgumentParser(prog="vrm", description="Variational Reward Modeling in Pyro.")
    parser.add_argument("--log-level", default=os.environ.get("VRM_LOG_LEVEL", "WARNING"),
                        help="Python logging level (default: WARNING).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("train", help="Fit VRM (and the Bradley–Terry baseline beside it) and save checkpoints.",
                       formatter_class=fmt)
    p.add_argument("--output", default="runs/vrm", help="Run directory: OUTPUT/model (VRM), OUTPUT/baseline, "
                   "OUTPUT/checkpoints (training snapshots), OUTPUT/run.json (configs).")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="Continue the interrupted run in DIR from its latest snapshot, with its saved configuration.")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="Also fit the Bradley–Terry baseline on the same splits and print both.")
    p.add_argument("--recipe", default="default", choices=list(RECIPES),
                   help="The defaults of every option below: default (what measured best on validation), windowed "
                        "(rounds 16-18's default: the response pooled over 256-token windows, vrm_pyro.config."
                        "WINDOWED_RECIPE) or likelihood (a small LM's PMI and end-of-turn statistics; needs the LM, see "
                        "vrm_pyro.config.LIKELIHOOD_RECIPE). Options given explicitly win.")
    for cls in CONFIGS:
        p._add_dataclass_arguments(cls)
    p.set_defaults(func=cmd_train, **RECIPES[recipe])  # what measured best (vrm_pyro.config.RECIPES)

    def common(q, checkpoint=True):
        if checkpoint:
            q.add_argument("--checkpoint", required=True, help="Checkpoint directory written by `vrm train`.")
        q.add_argument("--cache-dir", default=None, help="Embedding cache directory.")
        q.add_argument("--device", default="cpu", help="cpu or cuda[:N].")
        q.add_argument("--num-samples", type=int, default=32, help="Monte Carlo samples of the guide.")

    def data_options(q):
        q.add_argument("--baseline", default=None, help="Baseline checkpoint (default: CHECKPOINT/baseline of a run).")
        q.add_argument("--data", default=None, help="Pairs to evaluate (default: the checkpoint's training data).")
        q.add_argument("--format", default="auto", choices=["auto", "pairs", "hh", "alpaca_eval"])
        q.add_argument("--split", default=None, choices=["all", "train", "validation", "test"],
                       help="Prompt-level split (default: test of the training data, all of --data).")
        q.add_argument("--data-limit", type=int, default=None)
        q.add_argument("--skip-invalid", action="store_true")

    p = sub.add_parser("eval", formatter_class=fmt, help="Model and baseline side by side: accuracy, NLL, Brier, ECE, "
                       "reliability, accuracy vs uncertainty, length bias, the judge's nuisance coefficients, groups.")
    common(p)
    data_options(p)
    p.add_argument("--group-column", default=None, help="Break metrics down by this field (e.g. generator_2).")
    p.add_argument("--output", default=None, help="Report directory (report.md, report.json, PNG plots).")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("length-bias", formatter_class=fmt, help="Reward vs length: Spearman, accuracy when the shorter "
                       "answer wins, reward change under content-free padding.")
    common(p)
    data_options(p)
    p.add_argument("--padding-samples", type=int, default=200, help="Responses padded for the perturbation test.")
    p.add_argument("--output", default=None, help="Report directory.")
    p.set_defaults(func=cmd_length_bias)

    p = sub.add_parser("best-of-n", formatter_class=fmt,
                       help="Best-of-N over-optimisation curve vs random, longest and oracle picks.")
    common(p)
    p.add_argument("--baseline", default=None, help="Baseline checkpoint (default: CHECKPOINT/baseline of a run).")
    p.add_argument("--input", required=True, help='JSONL {"prompt", "candidates": [{"response", "gold"}, ...]}, or '
                   'AlpacaEval best-of-N rows {"instruction", "samples": [{"output", "preference"}]} (gold = '
                   'preference - 1; ../shared/data/alpaca_bon_dev.jsonl.gz).')
    p.add_argument("--held-out-from", default=None,
                   help="Keep only prompts that are not in this run's training or validation split (a run directory "
                        "or checkpoint).")
    p.add_argument("--n", type=int, nargs="+", default=None, help="Values of n (default 1, 2, 4, ... up to N).")
    p.add_argument("--select", choices=["mean", "lcb", "both"], default="mean",
                   help="Pick by the posterior mean reward, by its lower credible bound mean - kappa * reward_std "
                        "(pessimism where the model has not seen anything alike), or show both curves.")
    p.add_argument("--kappa", type=float, default=1.0, help="Pessimism of --select lcb.")
    p.add_argument("--output", default=None, help="Report directory (best_of_n.csv/.md/.png).")
    p.set_defaults(func=cmd_best_of_n)

    p = sub.add_parser("best-of-n-data", formatter_class=fmt,
                       help="Build a best-of-N file from AlpacaEval pairs (held-out instructions).")
    p.add_argument("--alpaca-eval", required=True, help="AlpacaEval pairs file (alpaca_eval format).")
    p.add_argument("--held-out-from", default=None,
                   help="Keep only the test-split instructions of this checkpoint's training data.")
    p.add_argument("--min-candidates", type=int, default=16,
                   help="Keep only instructions with at least this many distinct answers.")
    p.add_argument("--output", required=True, help="Output JSONL.")
    p.set_defaults(func=cmd_best_of_n_data)

    p = sub.add_parser("spurious", formatter_class=fmt, help="Synthetic spurious-cue test bed: accuracy in and out "
                       "of distribution as the cue-label correlation grows, VRM vs baseline.")
    p.add_argument("--agreements", type=float, nargs="+", default=[0.5, 0.7, 0.85, 1.0])
    p.add_argument("--nuisance", type=float, default=3.0, help="Strength of the cue in the embedding.")
    p.add_argument("--train-prompts", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="Report directory (spurious.csv/.md/.png).")
    p.set_defaults(func=cmd_spurious)

    p = sub.add_parser("stress", formatter_class=fmt, help="Junk answers (shuffled, off-topic, repeated, truncated, "
                       "echoed, templates, ...) made from real ones: how often each kind outranks the real answer, "
                       "model and baseline.")
    common(p)
    p.add_argument("--baseline", default=None, help="Baseline checkpoint (default: CHECKPOINT/baseline of a run).")
    p.add_argument("--input", required=True, help="Real answers: JSONL {prompt, response} rows, or best-of-N dev rows "
                   "{instruction, samples} (the sample the judge liked most).")
    p.add_argument("--kinds", default="all", help="Junk kinds: all, core, rrm, or comma-separated names of "
                   "vrm_pyro.hacking.JUNK_KINDS.")
    p.add_argument("--held-out-from", default=None, help="Keep only prompts that are not in this run's training or "
                   "validation split (a run directory or checkpoint).")
    p.add_argument("--limit", type=int, default=None, help="Use the first N real answers.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="Report directory (stress.md, stress.csv, stress.png).")
    p.set_defaults(func=cmd_stress)

    p = sub.add_parser("objectives", formatter_class=fmt, help="What each objective responds to: top prompts, "
                       "highest/lowest responses, correlation with length, list items, code blocks, refusals.")
    common(p)
    p.add_argument("--input", required=True, help="JSONL rows with prompt and response.")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--output", default=None, help="Report directory (objectives.md/.json).")
    p.set_defaults(func=cmd_objectives)

    p = sub.add_parser("score", formatter_class=fmt,
                       help="Add reward, reward_std, reward_lcb and weights to {prompt, response} JSONL rows.")
    common(p)
    p.add_argument("--input", required=True, help="JSONL rows with prompt and response (other fields kept).")
    p.add_argument("--output", required=True, help="Output JSONL (written as OUTPUT.partial, renamed when done).")
    p.add_argument("--kappa", type=float, default=1.0, help="reward_lcb = reward - kappa * reward_std.")
    p.add_argument("--include-nuisance", action="store_true",
                   help="Also write reward_total: the authentic reward plus the judge's nuisance term.")
    p.add_argument("--chunk-size", type=int, default=512, help="Rows scored at a time (bounds memory).")
    p.add_argument("--resume", action="store_true", help="Continue OUTPUT.partial of an interrupted run.")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=False,
                   help="Store embeddings in the cache (off: rows are usually unique and memory stays bounded).")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("inspect", formatter_class=fmt, help="Posterior objective weights per prompt, with credible "
                       "intervals; the judge's nuisance coefficients.")
    common(p)
    p.add_argument("--input", required=True, help="JSONL rows with a prompt field.")
    p.add_argument("--output", default="weights.csv", help="Table (.csv or .parquet).")
    p.add_argument("--plot", default=None, help="Heatmap PNG of prompts x objectives.")
    p.add_argument("--level", type=float, default=0.9, help="Credible interval mass.")
    p.add_argument("--clusters", type=int, default=0, help="Add a k-means cluster column (K clusters) by weights.")
    p.add_argument("--compare", type=int, nargs=2, default=None, metavar=("I", "J"),
                   help="Compare the weight posteriors of prompts I and J of the input (0-based).")
    p.set_defaults(func=cmd_inspect)

    from vrm_pyro.serving import ServeConfig

    p = sub.add_parser("serve", formatter_class=fmt, help="An HTTP reward server: OpenRLHF's remote reward-model "
                       "protocol (POST /get_reward) and a JSON endpoint (POST /v1/rewards), dynamic batching.")
    p._add_dataclass_arguments(ServeConfig)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    recipe = argparse.ArgumentParser(add_help=False)
    recipe.add_argument("--recipe", default="default", choices=list(RECIPES))
    known, _ = recipe.parse_known_args(argv)  # the recipe sets the other options' defaults, so it is read first
    parser = build_parser(known.recipe)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except VRMError as exc:
        print(f"vrm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vrm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
