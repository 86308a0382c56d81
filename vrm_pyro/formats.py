"""Reading preference data in its real formats into :class:`~vrm_pyro.data.PreferencePairs`.

Every row becomes ``(prompt, response_a, response_b, label, meta)`` where ``label`` is
P(response_a preferred) in [0, 1] (1 for a hard "chosen" label, a judge probability for
soft labels). Supported formats:

``pairs``
    ``prompt`` / ``chosen`` / ``rejected`` (the common reward-trainer format). Each field
    is a string or a list of chat messages ``{"role", "content"}``.
``hh``
    Anthropic HH-RLHF: ``chosen`` / ``rejected`` hold the whole dialogue; the prompt is
    everything up to the last ``"\\n\\nAssistant:"``.
``alpaca_eval``
    AlpacaEval annotations: ``instruction``, ``output_1``, ``output_2``, ``preference`` in
    [1, 2]; label = P(output_1 preferred) = 2 - preference.

Local ``.jsonl`` / ``.jsonl.gz`` files are parsed here so that errors name the line;
``.json``, ``.parquet``, ``.csv`` and hub names go through :func:`datasets.load_dataset`
(errors then name the row index). Every bad row raises one :class:`~vrm_pyro.errors.DataError`
naming ``FILE:LINE: field 'X'``, or is skipped and counted with ``skip_invalid``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vrm_pyro.config import DataConfig
from vrm_pyro.data import PreferencePairs
from vrm_pyro.errors import DataError

FORMATS = ("pairs", "hh", "alpaca_eval")
HH_SEPARATOR = "\n\nAssistant:"
BUNDLED_DATA = "hh_rlhf_harmless_slice.jsonl.gz"


# ----------------------------------------------------------------------------- reading rows


def bundled_data_path() -> Path:
    """Path of the bundled HH-RLHF harmless slice (MIT, github.com/anthropics/hh-rlhf)."""
    return Path(str(resources.files("vrm_pyro.resources").joinpath(BUNDLED_DATA)))


def find_shared_file(name: str) -> Path | None:
    """A file of the project's shared data directory: ``$VRM_SHARED_DATA/name``, else ``shared/data/name``
    beside the working directory or one or two levels up (notebooks run from ``notebooks/``); None if absent."""
    roots = [Path(os.environ["VRM_SHARED_DATA"])] if os.environ.get("VRM_SHARED_DATA") else []
    roots += [Path(up) / "shared" / "data" for up in (".", "..", "../..")]
    return next((r / name for r in roots if (r / name).is_file()), None)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, parsed_object)``; malformed JSON yields ``(line, DataError)``; a file that is
    not UTF-8 text (binary, or compressed without a ``.gz`` name) raises a DataError saying so."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    hint = ("it is gzip-compressed: give it a .gz name" if raw[:2] == b"\x1f\x8b"
                            else "is it a binary file? vrm reads JSON Lines text")
                    raise DataError(f"not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}); {hint}",
                                    source=str(path), line=lineno) from exc
                if "\x00" in line:
                    raise DataError("NUL bytes: a binary file, not JSON Lines text", source=str(path), line=lineno)
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield lineno, DataError(f"malformed JSON ({exc.msg} at column {exc.colno})",
                                            source=str(path), line=lineno)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read file ({exc})", source=str(path)) from exc


def _iter_dataset_rows(data: str, split: str) -> Iterator[tuple[int, Any]]:
    """Rows of a local JSON/Parquet/CSV file or a `datasets` name, numbered from 0."""
    import datasets

    path = Path(data)
    try:
        if path.exists():
            kind = {".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix.lower())
            if kind is None:
                raise DataError(f"unsupported file type {path.suffix!r}; use .jsonl, .jsonl.gz, "
                                ".json, .parquet or .csv", source=data)
            ds = datasets.load_dataset(kind, data_files=str(path), split="train")
        elif os.path.isdir(data):  # pragma: no cover - covered by exists()
            ds = datasets.load_from_disk(data)
        else:
            ds = datasets.load_dataset(data, split=split)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"no such file or dataset ({exc}); give a local path or a dataset "
                        "available offline", source=data) from exc
    except Exception as exc:  # datasets raises many types; say what failed and where
        raise DataError(f"could not load with `datasets` ({type(exc).__name__}: {exc})",
                        source=data) from exc
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"split {split!r} not found; available: {list(ds)}", source=data)
        ds = ds[split]
    yield from enumerate(ds)


def iter_rows(data: str, split: str = "train") -> Iterator[tuple[int, Any]]:
    """Raw rows of a file or dataset: ``(line or row number, dict | DataError)``."""
    path = Path(data)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        if not path.is_file():
            raise DataError("file does not exist; check the path (relative paths are resolved "
                            f"from {os.getcwd()})", source=data)
        yield from _iter_jsonl(path)
        return
    if path.suffix and not path.exists() and ("/" in data or path.suffix in (".json", ".csv", ".parquet", ".gz")):
        raise DataError("file does not exist; check the path", source=data)
    yield from _iter_dataset_rows(data, split)


# ----------------------------------------------------------------------------- parsing rows


def _text(row: dict, key: str, source: str, line: int, *, allow_empty: bool = False) -> str:
    if key not in row or row[key] is None:
        raise DataError(f"missing (row has fields {sorted(row)})", source=source, line=line, field=key)
    value = row[key]
    if isinstance(value, list):
        value = render_messages(value, source, line, key)
    if not isinstance(value, str):
        raise DataError(f"expected a string or a list of chat messages, got {type(value).__name__}",
                        source=source, line=line, field=key)
    if not value.strip() and not allow_empty:
        raise DataError("empty text", source=source, line=line, field=key)
    unicode_problem = invalid_unicode(value)
    if unicode_problem:
        raise DataError(unicode_problem, source=source, line=line, field=key)
    return value


def invalid_unicode(text: str) -> str | None:
    """Why ``text`` cannot be encoded as UTF-8 (a lone surrogate, e.g. from a JSON ``\\ud800`` escape), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"not valid Unicode ({exc.reason} {text[exc.start]!r} at character {exc.start}); "
                "fix the text or drop the row")
    return None


def render_messages(messages: list, source: str, line: int, key: str) -> str:
    """Render ``[{"role", "content"}, ...]`` as HH-style text ``\\n\\nHuman: ...\\n\\nAssistant: ...``."""
    parts = []
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or not isinstance(m.get("role"), str):
            raise DataError(f"message {j} must be an object with string 'role' and 'content'",
                            source=source, line=line, field=key)
        role = {"user": "Human", "human": "Human", "assistant": "Assistant", "system": "System"}.get(
            m["role"].lower(), m["role"].capitalize())
        parts.append(f"\n\n{role}: {m['content']}")
    return "".join(parts)


def _label(row: dict, key: str, source: str, line: int) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"expected a number, got {type(value).__name__}", source=source, line=line, field=key)
    value = float(value)
    if not math.isfinite(value):
        raise DataError(f"not a finite number ({value})", source=source, line=line, field=key)
    return value


def _parse_pairs(row: dict, source: str, line: int, label_column: str | None) -> tuple:
    prompt = _text(row, "prompt", source, line)
    chosen = _text(row, "chosen", source, line)
    rejected = _text(row, "rejected", source, line)
    if isinstance(row.get("chosen"), list) and isinstance(row.get("prompt"), list):
        # conversational rows may repeat the prompt inside chosen/rejected ("implicit prompt")
        if chosen.startswith(prompt) and rejected.startswith(prompt):
            chosen, rejected = chosen[len(prompt):], rejected[len(prompt):]
    label = 1.0
    label_column = label_column or ("label" if "label" in row else None)  # a `label` column is always used
    if label_column is not None:
        label = _label(row, label_column, source, line)
        if not 0.0 <= label <= 1.0:
            raise DataError(f"soft label must be in [0, 1], got {label}", source=source, line=line,
                            field=label_column)
    return prompt, chosen, rejected, label


def _parse_hh(row: dict, source: str, line: int, label_column: str | None) -> tuple:
    chosen = _text(row, "chosen", source, line)
    rejected = _text(row, "rejected", source, line)
    cut = chosen.rfind(HH_SEPARATOR)
    if cut < 0:
        raise DataError(f"no {HH_SEPARATOR!r} turn in the dialogue", source=source, line=line, field="chosen")
    prompt = chosen[: cut + len(HH_SEPARATOR)]
    if not rejected.startswith(prompt):
        cut_r = rejected.rfind(HH_SEPARATOR)
        if cut_r < 0 or rejected[: cut_r + len(HH_SEPARATOR)] != prompt:
            raise DataError("chosen and rejected dialogues do not share the prompt up to the last "
                            "Assistant turn", source=source, line=line, field="rejected")
    a, b = chosen[len(prompt):], rejected[len(prompt):]
    for key, text in (("chosen", a), ("rejected", b)):
        if not text.strip():
            raise DataError("empty final Assistant turn", source=source, line=line, field=key)
    return prompt, a, b, 1.0


def _parse_alpaca_eval(row: dict, source: str, line: int, label_column: str | None) -> tuple:
    prompt = _text(row, "instruction", source, line)
    a = _text(row, "output_1", source, line)
    b = _text(row, "output_2", source, line)
    pref = _label(row, "preference", source, line)
    if not 1.0 <= pref <= 2.0:
        raise DataError(f"preference must be in [1, 2] (1 = output_1 better), got {pref}",
                        source=source, line=line, field="preference")
    return prompt, a, b, 2.0 - pref


_PARSERS = {"pairs": _parse_pairs, "hh": _parse_hh, "alpaca_eval": _parse_alpaca_eval}


def detect_format(row: dict, source: str = "<data>", line: int | None = None) -> str:
    """Guess the row format from its keys."""
    keys = set(row)
    if {"instruction", "output_1", "output_2", "preference"} <= keys:
        return "alpaca_eval"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "pairs"
    if {"chosen", "rejected"} <= keys:
        return "hh"
    raise DataError(f"cannot detect the format from fields {sorted(keys)}; expected prompt/chosen/rejected "
                    "(pairs), chosen/rejected dialogues (hh) or instruction/output_1/output_2/preference "
                    "(alpaca_eval); or pass --format with column mapping options", source=source, line=line)


def parse_rows(rows: Iterable[tuple[int, Any]], *, fmt: str = "auto", source: str = "<data>",
               columns: dict[str, str] | None = None, label_column: str | None = None,
               limit: int | None = None, skip_invalid: bool = False,
               keep_meta: bool = True) -> PreferencePairs:
    """Parse numbered raw rows into :class:`PreferencePairs`.

    ``columns`` maps canonical names (``prompt``, ``chosen``, ``rejected``) to the row's own
    column names. Bad rows raise one :class:`DataError` naming source, line and field, or
    with ``skip_invalid`` are skipped and counted.
    """
    if fmt != "auto" and fmt not in _PARSERS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)} or auto", source=source)
    rename = {v: k for k, v in (columns or {}).items() if v}
    prompts, aa, bb, labels, metas, errors = [], [], [], [], [], []
    parser = _PARSERS.get(fmt)
    canonical = {"prompt", "chosen", "rejected", "instruction", "output_1", "output_2", "preference"}
    for line, row in rows:
        try:
            if isinstance(row, DataError):
                raise row
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}", source=source, line=line)
            if rename:
                row = {rename.get(k, k): v for k, v in row.items()}
            if parser is None:
                fmt = detect_format(row, source, line)
                parser = _PARSERS[fmt]
            prompt, a, b, label = parser(row, source, line, label_column)
            if a == b:
                raise DataError("the two responses are identical; a preference between them carries "
                                "no information (remove the row or use --skip-invalid)",
                                source=source, line=line, field="rejected" if fmt != "alpaca_eval" else "output_2")
        except DataError as exc:
            if not skip_invalid:
                raise
            errors.append(str(exc))
            continue
        prompts.append(prompt)
        aa.append(a)
        bb.append(b)
        labels.append(label)
        if keep_meta:
            metas.append({k: v for k, v in row.items() if k not in canonical and k not in (label_column, "label")
                          and isinstance(v, (str, int, float, bool, type(None)))})
        else:
            metas.append({})
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        detail = f" ({len(errors)} invalid rows skipped; first: {errors[0]})" if errors else ""
        raise DataError(f"no valid preference pairs{detail}", source=source)
    return PreferencePairs(prompts, aa, bb, np.asarray(labels, np.float32), metas, source=source,
                           skipped=len(errors), errors=errors)


def load_pairs(data: str | os.PathLike | None = None, format: str = "auto", *, split: str = "train",
               prompt_column: str | None = None, chosen_column: str | None = None,
               rejected_column: str | None = None, label_column: str | None = None,
               limit: int | None = None, skip_invalid: bool = False) -> PreferencePairs:
    """Load preference pairs from a file, a `datasets` name, or (``data=None``) the bundled slice.

    >>> pairs = load_pairs("../shared/data/hh_rlhf_harmless.jsonl.gz", format="hh", limit=100)
    """
    source = str(data) if data is not None else str(bundled_data_path())
    if data is None and format == "auto":
        format = "hh"
    columns = {"prompt": prompt_column, "chosen": chosen_column, "rejected": rejected_column}
    return parse_rows(iter_rows(source, split), fmt=format, source=source, columns=columns,
                      label_column=label_column, limit=limit, skip_invalid=skip_invalid)


def load_from_config(cfg: DataConfig) -> PreferencePairs:
    return load_pairs(cfg.data, cfg.format, split=cfg.split, prompt_column=cfg.prompt_column,
                      chosen_column=cfg.chosen_column, rejected_column=cfg.rejected_column,
                      label_column=cfg.label_column, limit=cfg.limit, skip_invalid=cfg.skip_invalid)


def load_score_rows(path: str) -> Iterator[tuple[int, dict]]:
    """Rows ``{"prompt", "response", ...}`` for ``vrm score``, validated, with their line numbers. An empty response
    is scored like any other (a policy's empty sample gets the model's reward for it, not an error at row 70,000);
    an empty prompt is an error."""
    for line, row in iter_rows(path):
        if isinstance(row, DataError):
            raise row
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", source=path, line=line)
        _text(row, "prompt", path, line)
        _text(row, "response", path, line, allow_empty=True)
        yield line, row
