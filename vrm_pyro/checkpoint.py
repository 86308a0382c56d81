"""Checkpoint directories: ``config.json`` (schema-versioned JSON) + ``model.safetensors``.

No pickle anywhere: weights are safetensors, everything else is JSON validated on load.
A directory is written to a temporary sibling and renamed into place, so an interrupted
save never leaves a half-written checkpoint that loads. Loading refuses a checkpoint of
another schema version, or whose weights do not match its config, with a clear message.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vrm_pyro.config import EncoderConfig, ModelConfig, TrainConfig
from vrm_pyro.errors import CheckpointError, ConfigError
from vrm_pyro.jsontext import json_text
from vrm_pyro.order_model import needs_order_model
from vrm_pyro.reward_model import RewardModel

SCHEMA_VERSION = 2
#: checkpoints of version 0.1 (schema 1) load too: their config and weight names are migrated
READABLE_SCHEMAS = (1, 2)
CONFIG_NAME, WEIGHTS_NAME, ADAPTER_NAME = "config.json", "model.safetensors", "adapter.safetensors"
ORDER_MODEL_NAME = "order_model.safetensors"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the reward model plus what is needed to embed new text for it."""

    reward_model: RewardModel
    encoder: EncoderConfig
    encoder_identity: str | None = None
    train: TrainConfig | None = None
    metadata: dict = field(default_factory=dict)
    #: LoRA adapter weights of the encoder (``encoder.mode == "lora"``), else None
    adapter: dict | None = None
    #: the fitted sentence-order model of the representation parts ``order_score`` and ``order_margin``, else None
    order_model: object | None = None


def save_checkpoint(path: str | os.PathLike, rm: RewardModel, *, encoder: EncoderConfig | None = None,
                    encoder_identity: str | None = None, train: TrainConfig | None = None,
                    metadata: dict | None = None, adapter: dict | None = None, order_model=None) -> Path:
    """Write ``rm``, its configs and a model card (``README.md``) to directory ``path`` atomically (replacing an
    old one). Options not given come from ``rm.provenance`` (set when a model is loaded or trained by
    :func:`vrm_pyro.experiment.train_and_evaluate`).

    ``adapter``: LoRA adapter weights of the encoder (only those: the base model is named by
    ``encoder`` and ``encoder_identity``, and re-loaded from there). ``order_model``: the fitted
    :class:`~vrm_pyro.order_model.SentenceOrderModel` the representation parts ``order_score`` and ``order_margin`` need."""
    known = getattr(rm, "provenance", {}) or {}
    encoder = encoder or known.get("encoder") or EncoderConfig()
    encoder_identity = encoder_identity or known.get("encoder_identity")
    train = train or known.get("train")
    metadata = metadata if metadata is not None else known.get("metadata", {})
    order_model = order_model if order_model is not None else known.get("order_model")
    if needs_order_model(encoder.representation) and order_model is None:
        raise CheckpointError(f"save_checkpoint({str(path)!r}): the representation {encoder.representation!r} has the "
                              "part order_score or order_margin but no fitted order model was given (order_model=encoder.order_model)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        config = {
            "schema_version": SCHEMA_VERSION,
            "library": "vrm-pyro",
            "kind": rm.kind,
            "emb_dim": rm.prompt_dim,
            "response_dim": rm.response_dim,
            "model": rm.config.to_dict(),
            "encoder": encoder.to_dict(),
            "encoder_identity": encoder_identity,
            "adapter": ADAPTER_NAME if adapter else None,
            "order_model": ORDER_MODEL_NAME if order_model is not None else None,
            "train": train.to_dict() if train is not None else None,
            "metadata": metadata or {},
        }
        (tmp / CONFIG_NAME).write_text(json_text(config, indent=2, default=float))
        state = {k: v.detach().contiguous().cpu() for k, v in rm.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"schema_version": str(SCHEMA_VERSION)})
        if adapter:
            save_file({k: v.detach().contiguous().cpu() for k, v in adapter.items()}, str(tmp / ADAPTER_NAME))
        if order_model is not None:
            save_file({k: v.contiguous().cpu() for k, v in order_model.state_dict().items()}, str(tmp / ORDER_MODEL_NAME))
        from vrm_pyro.model_card import model_card

        (tmp / "README.md").write_text(model_card(rm, config))
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rm.provenance = {"encoder": encoder, "encoder_identity": encoder_identity, "train": train,
                     "metadata": metadata or {}, "order_model": order_model}
    return path


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/model`` when ``path`` is a training-run directory (``vrm train --output``)."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file() and (path / "run.json").is_file() and (path / "model").is_dir():
        return path / "model"
    return path


def read_config(path: str | os.PathLike) -> dict:
    """The validated ``config.json`` of a checkpoint directory (or of a run directory's model)."""
    path = resolve_checkpoint_dir(path)
    cfg_path = path / CONFIG_NAME
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory (it should hold {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME}; create one with `vrm train --output {path}`)")
    if not cfg_path.is_file() or not (path / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{path}: incomplete checkpoint, {CONFIG_NAME} or {WEIGHTS_NAME} is missing")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object")
    version = cfg.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise CheckpointError(f"{cfg_path}: schema_version {version!r} is not supported by this vrm-pyro "
                              f"(expects {SCHEMA_VERSION}); re-train or use the matching vrm-pyro version")
    for key, kind in (("kind", str), ("emb_dim", int), ("model", dict), ("encoder", dict)):
        if not isinstance(cfg.get(key), kind):
            raise CheckpointError(f"{cfg_path}: field '{key}' missing or not a {kind.__name__}")
    return cfg


#: what version 0.1 did where its configs have no field (later defaults differ)
V01_MODEL_DEFAULTS = {"nuisance": "", "bt_head": "linear", "path_prior_scale": 1.0, "feature_transform": "none"}
V01_ENCODER_DEFAULTS = {"representation": "joint"}


def _migrate_v1_state(state: dict, rm: RewardModel) -> dict:
    """Weight names of version 0.1: the point path was ``model.direct``, the BT head ``model.head``; the
    (identity) transform buffers did not exist."""
    out = {}
    for k, v in state.items():
        if k.startswith("model.direct."):
            k = "model.path.net." + k[len("model.direct."):]
        elif k.startswith("model.head."):
            k = "model.head.net." + k[len("model.head."):]
        out[k] = v
    own = rm.state_dict()
    out.update({k: v for k, v in own.items() if k.startswith("transform.")})
    out["transform.fitted"] = torch.ones((), dtype=torch.bool)
    return out


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint directory written by :func:`save_checkpoint` (VRM or baseline)."""
    from vrm_pyro.registry import build_reward_model
    from vrm_pyro.representations import representation_dim

    path = resolve_checkpoint_dir(path)
    cfg = read_config(path)
    if cfg["schema_version"] == 1:  # fields version 0.1 did not have take version 0.1's behaviour, not today's defaults
        cfg["model"] = {**V01_MODEL_DEFAULTS, **cfg["model"]}
        cfg["encoder"] = {**V01_ENCODER_DEFAULTS, **cfg["encoder"]}
    try:
        model_cfg = ModelConfig.from_dict(cfg["model"], where=str(path / CONFIG_NAME))
        encoder_cfg = EncoderConfig.from_dict(cfg["encoder"], where=str(path / CONFIG_NAME))
        train_cfg = TrainConfig.from_dict(cfg["train"]) if cfg.get("train") else None
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path / CONFIG_NAME}: invalid configuration: {exc}") from exc
    rep = encoder_cfg.representation  # the prior's blocks and signs come with the weights; the model is
    fits = representation_dim(rep, cfg["emb_dim"]) == (cfg.get("response_dim") or cfg["emb_dim"])  # built to hold them
    try:
        state = load_file(str(path / WEIGHTS_NAME))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path / WEIGHTS_NAME}: unreadable safetensors file ({exc})") from exc
    rm = build_reward_model(model_cfg if fits else model_cfg.replace(path_prior="dimension", monotone="", monotone_prior="half_normal"),
                            emb_dim=cfg["emb_dim"], response_dim=cfg.get("response_dim"),
                            representation=rep if fits else None,
                            gate_columns=None if fits else state.get("model.gate.columns"),
                            gate_factors=None if fits else state.get("model.gate.factors"))
    rm.config = model_cfg
    if cfg["schema_version"] == 1:
        state = _migrate_v1_state(state, rm)
    expected = rm.state_dict()
    for k in set(expected) - set(state):  # saved before the path's prior (signs) was stored: the config's own
        if k.endswith((".prior_std", ".monotone")):
            state[k] = expected[k]
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: weights do not match config.json (missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}, wrong shape {wrong[:5]}); the files are from different models")
    adapter = None
    if cfg.get("adapter"):
        if encoder_cfg.mode != "lora":
            raise CheckpointError(f"{path / CONFIG_NAME}: an adapter is listed but the encoder mode is {encoder_cfg.mode!r}")
        try:
            adapter = load_file(str(path / ADAPTER_NAME))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path / ADAPTER_NAME}: missing or unreadable LoRA adapter ({exc})") from exc
    elif encoder_cfg.mode == "lora":
        raise CheckpointError(f"{path / CONFIG_NAME}: the encoder mode is lora but no adapter weights were saved")
    order_model = None
    if cfg.get("order_model"):
        from vrm_pyro.order_model import SentenceOrderModel

        try:
            order_model = SentenceOrderModel.from_state_dict(load_file(str(path / ORDER_MODEL_NAME)),
                                                             where=str(path / ORDER_MODEL_NAME))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path / ORDER_MODEL_NAME}: missing or unreadable sentence-order model ({exc})") from exc
    elif needs_order_model(rep):
        raise CheckpointError(f"{path / CONFIG_NAME}: the representation has the part order_score or order_margin but no "
                              f"sentence-order model was saved ({ORDER_MODEL_NAME})")
    rm.load_state_dict(state)
    rm.to(device).eval()
    rm.provenance = {"encoder": encoder_cfg, "encoder_identity": cfg.get("encoder_identity"), "train": train_cfg,
                     "metadata": cfg.get("metadata", {}), "order_model": order_model}
    return Checkpoint(rm, encoder_cfg, cfg.get("encoder_identity"), train_cfg, cfg.get("metadata", {}), adapter,
                      order_model)
