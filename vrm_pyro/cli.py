"""The ``vrm`` command: ``train``, ``eval``, ``score``, ``inspect``.

Options of ``vrm train`` are generated from the config dataclasses (``--num-objectives`` is
``ModelConfig.num_objectives``, help text included); the commands only call the Python API.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path

from vrm_pyro.config import DataConfig, EncoderConfig, ModelConfig, TrainConfig
from vrm_pyro.errors import ConfigError, VRMError

CONFIGS = (DataConfig, EncoderConfig, ModelConfig, TrainConfig)


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _base_type(tp):
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One option per dataclass field, named ``--field-name`` unless the field sets its flag."""
    group = parser.add_argument_group(cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        kw = {"dest": f"{cls.__name__}.{f.name}", "default": f.default, "help": f.metadata.get("help", "")}
        if tp is bool:
            group.add_argument(_flag(f), action=argparse.BooleanOptionalAction, **kw)
        else:
            kw["help"] += f" (default: {f.default})"
            group.add_argument(_flag(f), type=tp, metavar=f.name.upper(), **kw)


def configs_from_args(args: argparse.Namespace) -> dict[str, object]:
    values = vars(args)
    out = {}
    for cls in CONFIGS:
        kwargs = {f.name: values[f"{cls.__name__}.{f.name}"] for f in dataclasses.fields(cls)}
        out[cls.__name__] = cls(**kwargs)
    return out


# ----------------------------------------------------------------------------- commands


def _resume_configs(args, cfg: dict) -> dict:
    """The saved configs of the run in ``--resume DIR``; options given beside it must agree with them."""
    from vrm_pyro.experiment import read_run

    saved = read_run(args.resume)
    by_class = {"DataConfig": saved["data_cfg"], "EncoderConfig": saved["encoder_cfg"],
                "ModelConfig": saved["model_cfg"], "TrainConfig": saved["train_cfg"]}
    conflicts = []
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            given, stored = getattr(cfg[cls.__name__], f.name), getattr(by_class[cls.__name__], f.name)
            if given != f.default and given != stored and f.name != "progress":
                conflicts.append(f"{_flag(f)} {given!r} (the run has {stored!r})")
    if conflicts:
        raise ConfigError(f"--resume {args.resume} continues the run with its saved configuration "
                          f"({Path(args.resume) / 'run.json'}); drop these options: {'; '.join(conflicts)}")
    by_class["TrainConfig"] = by_class["TrainConfig"].replace(progress=cfg["TrainConfig"].progress)
    return {**by_class, "compare_baseline": saved["compare_baseline"]}


def cmd_train(args) -> int:
    from vrm_pyro.experiment import train_and_evaluate

    cfg = configs_from_args(args)
    baseline, output = args.baseline, args.output
    if args.resume:
        cfg = _resume_configs(args, cfg)
        baseline, output = cfg["compare_baseline"], args.resume
    result = train_and_evaluate(cfg["DataConfig"], cfg["EncoderConfig"], cfg["ModelConfig"], cfg["TrainConfig"],
                                output=output, compare_baseline=baseline,
                                progress=cfg["TrainConfig"].progress, resume=bool(args.resume))
    sizes = result.split_sizes
    print(f"pairs: train {sizes.get('train', 0)}, validation {sizes.get('validation', 0)}, "
          f"test {sizes.get('test', 0)} (split by prompt)" + (f"; skipped {result.skipped_rows} invalid rows"
                                                              if result.skipped_rows else ""))
    print(result.table())
    for name, run in result.runs.items():
        if run.checkpoint is not None:
            print(f"{name} checkpoint: {run.checkpoint}")
    return 0


def cmd_eval(args) -> int:
    from vrm_pyro.checkpoint import load_checkpoint
    from vrm_pyro.data import load_from_config
    from vrm_pyro.encoders import embed_pairs
    from vrm_pyro.evaluate import evaluate_pairs
    from vrm_pyro.scoring import encoder_for

    ckpt = load_checkpoint(args.checkpoint, device=args.device)
    data_meta = ckpt.metadata.get("data") or {}
    if args.data is None:  # the checkpoint's own data, split exactly as in training
        dc = DataConfig.from_dict(data_meta) if data_meta else DataConfig()
        data, pairs = dc.data, load_from_config(dc)
    else:
        dc = DataConfig(data=args.data, format=args.format, limit=args.data_limit, skip_invalid=args.skip_invalid)
        data, pairs = args.data, load_from_config(dc)
    split = args.split or ("all" if args.data is not None else "test")
    if split != "all":
        pairs = pairs.split_by_prompt(dc.val_fraction, dc.test_fraction, dc.split_seed)[split]
    encoder = encoder_for(ckpt, cache_dir=args.cache_dir, device=args.device)
    metrics = evaluate_pairs(ckpt.reward_model, embed_pairs(pairs, encoder, progress=sys.stderr.isatty()), num_samples=args.num_samples)
    metrics = {"checkpoint": str(args.checkpoint), "kind": ckpt.reward_model.kind, "data": str(data),
               "split": split, **metrics}
    print(json.dumps(metrics, indent=2))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(metrics, indent=2))
    return 0


def cmd_score(args) -> int:
    from vrm_pyro.scoring import score_file

    n = score_file(args.checkpoint, args.input, args.output, chunk_size=args.chunk_size,
                   num_samples=args.num_samples, cache_dir=args.cache_dir, device=args.device, resume=args.resume,
                   use_cache=args.cache)
    print(f"scored {n} rows -> {args.output}")
    return 0


def cmd_inspect(args) -> int:
    from vrm_pyro.inspect import inspect_file

    table = inspect_file(args.checkpoint, args.input, args.output, plot=args.plot, cache_dir=args.cache_dir,
                         device=args.device, level=args.level)
    print(table.head(20).to_string(max_colwidth=40))
    print(f"posterior weights of {len(table)} prompts -> {args.output}" + (f", heatmap -> {args.plot}" if args.plot else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrm", description="Variational Reward Modeling in Pyro.")
    parser.add_argument("--log-level", default=os.environ.get("VRM_LOG_LEVEL", "WARNING"),
                        help="Python logging level (default: WARNING).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="Fit VRM (and the Bradley–Terry baseline beside it) and save a checkpoint.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", default="runs/vrm", help="Run directory: OUTPUT/model (VRM), OUTPUT/baseline, "
                   "OUTPUT/checkpoints (training snapshots), OUTPUT/run.json (configs).")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="Continue the interrupted run in DIR from its latest snapshot, with its saved configuration.")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="Also fit the Bradley–Terry baseline on the same splits and print both.")
    for cls in CONFIGS:
        add_config_arguments(p, cls)
    p.set_defaults(func=cmd_train)

    def common(q, checkpoint=True):
        if checkpoint:
            q.add_argument("--checkpoint", required=True, help="Checkpoint directory written by `vrm train`.")
        q.add_argument("--cache-dir", default=None, help="Embedding cache directory.")
        q.add_argument("--device", default="cpu", help="cpu or cuda[:N].")
        q.add_argument("--num-samples", type=int, default=32, help="Monte Carlo samples of the guide.")

    p = sub.add_parser("eval", help="Pairwise accuracy, NLL, Brier, ECE of a checkpoint on preference pairs.")
    common(p)
    p.add_argument("--data", default=None, help="Pairs to evaluate (default: the checkpoint's training data).")
    p.add_argument("--format", default="auto", choices=["auto", "pairs", "hh", "alpaca_eval"])
    p.add_argument("--split", default=None, choices=["all", "train", "validation", "test"],
                   help="Prompt-level split to evaluate (default: test of the training data, all of --data).")
    p.add_argument("--data-limit", type=int, default=None)
    p.add_argument("--skip-invalid", action="store_true")
    p.add_argument("--output", default=None, help="Write the metrics as JSON here.")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("score", help="Add reward, reward_std and weights to {prompt, response} JSONL rows.")
    common(p)
    p.add_argument("--input", required=True, help="JSONL rows with prompt and response (other fields kept).")
    p.add_argument("--output", required=True, help="Output JSONL.")
    p.add_argument("--chunk-size", type=int, default=512, help="Rows scored at a time (bounds memory).")
    p.add_argument("--resume", action="store_true", help="Keep rows already in --output and score the rest.")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=False,
                   help="Store embeddings in the cache (off: rows are usually unique and memory stays bounded).")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("inspect", help="Posterior objective weights per prompt, with credible intervals.")
    common(p)
    p.add_argument("--input", required=True, help="JSONL rows with a prompt field.")
    p.add_argument("--output", default="weights.csv", help="Table (.csv or .parquet).")
    p.add_argument("--plot", default=None, help="Heatmap PNG of prompts x objectives.")
    p.add_argument("--level", type=float, default=0.9, help="Credible interval mass.")
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
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
