"""Training snapshots: everything needed to continue an interrupted :func:`~vrm_pyro.train.fit` exactly.

A snapshot is a directory ``<root>/step-00000120/`` holding

- ``modules.safetensors``: the trained parameters (reward model, and LoRA adapters if any);
- ``optimizer.safetensors`` + the optimizer's hyper-parameters in ``state.json``;
- ``rng.safetensors`` + ``state.json``: torch (CPU and CUDA), numpy and Python RNG states;
- ``state.json``: step, epoch, batch within the epoch, running loss, history, early-stopping state.

No pickle: tensors are safetensors, the rest is JSON. A snapshot is written to a temporary
sibling and renamed into place; ``<root>/index.json`` (itself replaced atomically) names the
latest snapshot and the best one by validation NLL. Only the last ``keep_last`` snapshots
are kept, plus the best, which is never pruned while it is the best. A directory that
``index.json`` does not name (a kill between the rename and the index update) is ignored.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vrm_pyro.errors import CheckpointError

SNAPSHOT_FORMAT = "vrm-training-snapshot/1"
INDEX = "index.json"


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- state <-> tensors


def optimizer_to_tensors(optim: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Flatten ``optim.state_dict()`` into safetensors-ready tensors and JSON-ready param groups."""
    sd = optim.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def optimizer_from_tensors(optim: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optim.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """The global RNG states Pyro and torch draw from: tensors + JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np_keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)],
            "python": [version, list(internal), gauss_next]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ---------------------------------------------------------------------------- snapshots


@dataclass
class Snapshot:
    """A loaded snapshot: module tensors, optimizer tensors and groups, RNG, loop state."""

    path: Path
    modules: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    optimizer_groups: list[dict]
    rng: dict[str, torch.Tensor]
    state: dict


class TrainingSnapshots:
    """The snapshot directory of one training run.

    >>> snaps = TrainingSnapshots("runs/vrm/checkpoints/model", keep_last=3)
    >>> snaps.save(120, modules=rm.state_dict(), optimizer=optim, state={...}, best=False)
    >>> snap = snaps.load()          # the latest, or None
    """

    def __init__(self, root: str | os.PathLike, keep_last: int = 3):
        if keep_last < 1:
            raise CheckpointError(f"keep_last must be >= 1 (TrainConfig.keep_last, --keep-last), got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last

    # index ------------------------------------------------------------------------------
    def index(self) -> dict:
        path = self.root / INDEX
        if not path.is_file():
            return {"format": SNAPSHOT_FORMAT, "snapshots": [], "latest": None, "best": None}
        try:
            index = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: unreadable snapshot index ({exc}); delete {self.root} to start over") from exc
        if index.get("format") != SNAPSHOT_FORMAT:
            raise CheckpointError(f"{path}: format {index.get('format')!r} is not {SNAPSHOT_FORMAT!r}")
        return index

    @property
    def latest(self) -> Path | None:
        name = self.index()["latest"]
        return self.root / name if name else None

    @property
    def best(self) -> Path | None:
        name = self.index()["best"]
        return self.root / name if name else None

    # save -------------------------------------------------------------------------------
    def save(self, step: int, *, modules: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
             state: dict, best: bool = False) -> Path:
        """Write the snapshot of ``step`` atomically, update the index, prune old snapshots."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:08d}"
        final = self.root / name
        tmp = self.root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in modules.items()}, str(tmp / "modules.safetensors"))
            opt_tensors, groups = optimizer_to_tensors(optimizer)
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            rng_tensors, rng_meta = rng_state()
            save_file(rng_tensors, str(tmp / "rng.safetensors"))
            doc = {"format": SNAPSHOT_FORMAT, "step": step, "optimizer_groups": groups, "rng": rng_meta, **state}
            (tmp / "state.json").write_text(json.dumps(doc, default=float))
            if final.exists():  # the same step saved twice (epoch end after a periodic save)
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        index = self.index()
        names = [n for n in index["snapshots"] if n != name] + [name]
        index.update(snapshots=names, latest=name, best=name if best else index["best"])
        keep = set(names[-self.keep_last:]) | {index["best"]}
        index["snapshots"] = [n for n in names if n in keep]
        _write_json_atomic(self.root / INDEX, index)
        for stale in set(names) - keep:
            shutil.rmtree(self.root / stale, ignore_errors=True)
        for leftover in self.root.glob(".step-*.tmp-*"):  # from a kill during a save
            shutil.rmtree(leftover, ignore_errors=True)
        return final

    # load -------------------------------------------------------------------------------
    def load(self, path: str | os.PathLike | None = None) -> Snapshot | None:
        """Load ``path`` (default: the latest snapshot); None when there is none."""
        path = Path(path) if path is not None else self.latest
        if path is None:
            return None
        try:
            state = json.loads((path / "state.json").read_text())
            modules = load_file(str(path / "modules.safetensors"))
            optimizer = load_file(str(path / "optimizer.safetensors"))
            rng = load_file(str(path / "rng.safetensors"))
        except (OSError, SafetensorError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: unreadable training snapshot ({exc})") from exc
        if state.get("format") != SNAPSHOT_FORMAT:
            raise CheckpointError(f"{path}/state.json: format {state.get('format')!r} is not {SNAPSHOT_FORMAT!r}")
        groups = state.pop("optimizer_groups")
        return Snapshot(path, modules, optimizer, groups, rng, state)

    def load_modules(self, path: Path) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(path / "modules.safetensors"))
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"{path}: unreadable training snapshot ({exc})") from exc


__all__ = ["Snapshot", "TrainingSnapshots", "rng_state", "set_rng_state"]
