"""On-disk embedding cache: safetensors shards keyed by SHA-256 of (encoder identity, settings, text).

Layout: ``<root>/<namespace>/shard-*.safetensors``, each shard holding ``keys`` (uint8
``(n, 32)``, SHA-256 digests) and ``embeddings`` (float32 ``(n, E)``), with a checksum of
both in the safetensors metadata. Shards are written to a temporary file and renamed
into place, so a reader never sees a half-written shard and two processes filling the
same cache at once each add their own shards. A shard whose checksum does not match
(truncated, corrupted) is moved aside and its rows are recomputed, never used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

log = logging.getLogger(__name__)

FORMAT = "vrm-embedding-cache/1"


def default_cache_dir() -> Path:
    return Path(os.environ.get("VRM_CACHE", Path.home() / ".cache" / "vrm_pyro"))


def text_key(identity: str, prompt: str, response: str | None) -> bytes:
    """SHA-256 digest of the encoder identity (name, weights fingerprint, settings) and the text."""
    h = hashlib.sha256()
    for part in (identity, prompt, "\x01" if response is None else "\x00" + response):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


def model_fingerprint(model, drop: tuple[str, ...] = ()) -> str:
    """Short hash of a transformers model's config and a sample of its first and last weights, for cache keys.
    Where the model was loaded from and which transformers wrote the config are left out (and the config keys
    in ``drop``): the same weights installed in another environment are the same model."""
    import json

    config = json.loads(model.config.to_json_string(use_diff=False))
    for key in ("_name_or_path", "transformers_version", "_commit_hash", *drop):
        config.pop(key, None)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    params = list(model.parameters())
    for p in (params[0], params[-1]):
        h.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _checksum(keys: np.ndarray, emb: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(keys).tobytes())
    h.update(np.ascontiguousarray(emb).tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """A key -> embedding store for one encoder identity.

    >>> cache = EmbeddingCache("/tmp/cache", identity="all-MiniLM-L6-v2@abc|mean|256")
    >>> found = cache.get([key1, key2])      # {key: tensor (E,)}
    >>> cache.put([key3], torch.randn(1, 384))
    """

    def __init__(self, root: str | os.PathLike | None, identity: str):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.identity = identity
        self.dir = self.root / hashlib.sha256(identity.encode()).hexdigest()[:24]
        self._index: dict[bytes, torch.Tensor] | None = None
        self._seen_shards: set[str] = set()
        self.rebuilt_shards = 0

    def _load_shard(self, path: Path) -> None:
        try:
            data = load_file(str(path))
            with open(path, "rb") as fh:
                header_len = int.from_bytes(fh.read(8), "little")
                import json

                meta = json.loads(fh.read(header_len)).get("__metadata__", {})
            keys, emb = data["keys"], data["embeddings"]
            if meta.get("format") != FORMAT or meta.get("checksum") != _checksum(keys, emb):
                raise ValueError("checksum mismatch")
        except (SafetensorError, ValueError, KeyError, OSError, EOFError) as exc:
            bad = path.with_suffix(f".corrupt-{uuid.uuid4().hex[:8]}")
            log.warning("embedding cache shard %s is unreadable (%s); moved to %s, rows will be recomputed",
                        path, exc, bad.name)
            try:
                os.replace(path, bad)
            except OSError:
                pass
            self.rebuilt_shards += 1
            return
        emb_t = torch.from_numpy(emb)
        for i, k in enumerate(keys):
            self._index[k.tobytes()] = emb_t[i]

    def _refresh(self) -> None:
        if self._index is None:
            self._index = {}
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("shard-*.safetensors")):
            if path.name not in self._seen_shards:
                self._seen_shards.add(path.name)
                self._load_shard(path)

    def get(self, keys: list[bytes]) -> dict[bytes, torch.Tensor]:
        """The cached embeddings among ``keys``."""
        self._refresh()
        return {k: self._index[k] for k in keys if k in self._index}

    def put(self, keys: list[bytes], embeddings: torch.Tensor) -> None:
        """Add rows atomically (one new shard)."""
        if not keys:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        k = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32).copy()
        e = embeddings.detach().to(torch.float32).cpu().numpy()
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        tmp = self.dir / f".tmp-{name}"
        save_file({"keys": k, "embeddings": e}, str(tmp),
                  metadata={"format": FORMAT, "checksum": _checksum(k, e), "identity": self.identity})
        os.replace(tmp, self.dir / name)
        self._seen_shards.add(name)
        if self._index is None:
            self._index = {}
        et = torch.from_numpy(e)
        for i, key in enumerate(keys):
            self._index[key] = et[i]
