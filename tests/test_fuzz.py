"""Property-based tests (hypothesis) over the loaders, `vrm score` rows and the Python API.

Every generated input must end in either a correct result or one :class:`DataError` naming
file and line (and field); an uncaught exception or a silently wrong result fails. Case
counts: ``FUZZ_EXAMPLES`` per test (7 tests; `pytest --hypothesis-show-statistics` prints them).
"""

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrm_pyro import ModelConfig, PairEmbeddings, build_reward_model
from vrm_pyro.errors import DataError, VRMError
from vrm_pyro.formats import load_pairs, load_score_rows

FUZZ_EXAMPLES = int(os.environ.get("VRM_FUZZ_EXAMPLES", "150"))
DERANDOMIZE = "VRM_FUZZ_RANDOM" not in os.environ  # CI replays the same cases; set it to explore
SETTINGS = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# text: ASCII, any Unicode (including lone surrogates, which JSON can carry as escapes), blanks, huge
texts = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20),
    st.sampled_from(["", " ", "\n\t", "\u200b", "\ud800", "Ä\u0308", "🙂" * 3, "\x00", "a" * 20000]),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), texts)
json_values = st.recursive(json_scalars, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                                  st.dictionaries(texts, kids, max_size=3)),
                           max_leaves=8)
labels = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 3), st.booleans(),
                   st.sampled_from(["0.5", None]))


@st.composite
def pair_rows(draw):
    """A pairs-format row, often valid, with perturbations whose validity is known."""
    row = {"prompt": draw(texts), "chosen": draw(texts), "rejected": draw(texts)}
    if draw(st.booleans()):
        row["label"] = draw(labels)
    if draw(st.integers(0, 5)) == 0:
        row.pop(draw(st.sampled_from(sorted(row))))
    if draw(st.integers(0, 5)) == 0:
        row[draw(st.sampled_from(["prompt", "chosen", "rejected"]))] = draw(json_scalars)
    if draw(st.integers(0, 6)) == 0:
        row["extra"] = draw(json_values)
    return row


def valid_text(v, *, blank_ok: bool = False) -> bool:
    """A non-blank string (any string with ``blank_ok``) that UTF-8 can encode (no lone surrogates)."""
    try:
        return isinstance(v, str) and (blank_ok or bool(v.strip())) and bool(v.encode("utf-8") or True)
    except UnicodeEncodeError:
        return False


def expected_pair(row):
    """The oracle: the pair a valid row must give, or None when the row must be refused."""
    def text(v):
        return v if valid_text(v) else None

    if not isinstance(row, dict):
        return None
    p, c, r = (text(row.get(k)) for k in ("prompt", "chosen", "rejected"))
    if p is None or c is None or r is None or c == r:
        return None
    label = row.get("label", 1.0)  # a `label` column is P(chosen preferred); null is refused
    if isinstance(label, bool) or not isinstance(label, (int, float)) or not math.isfinite(label) or not 0 <= label <= 1:
        return None
    return p, c, r, float(np.float32(label))  # labels are stored as float32


def _write_jsonl(rows) -> Path:
    fd, name = tempfile.mkstemp(suffix=".jsonl")
    with os.fdopen(fd, "w") as fh:  # ensure_ascii keeps lone surrogates as \\ud800 escapes, like real dumps
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return Path(name)


def _assert_located(err: DataError, path: Path):
    assert err.source == str(path) and (err.line is not None or "no valid preference pairs" in str(err)), str(err)
    assert str(err).startswith(str(path)), str(err)


@SETTINGS
@given(rows=st.lists(pair_rows(), min_size=1, max_size=6), skip=st.booleans())
def test_pairs_loader_gives_exactly_the_valid_rows_or_one_located_error(rows, skip):
    path = _write_jsonl(rows)
    expected = [expected_pair(r) for r in rows]
    try:
        pairs = load_pairs(str(path), "pairs", skip_invalid=skip)
    except DataError as err:
        _assert_located(err, path)
        if not skip:  # the first invalid row is the one named
            first_bad = expected.index(None) + 1 if None in expected else None
            assert err.line == first_bad or all(e is None for e in expected), (str(err), expected)
        else:
            assert all(e is None for e in expected)
        return
    finally:
        path.unlink()
    valid = [e for e in expected if e is not None]
    got = list(zip(pairs.prompt, pairs.response_a, pairs.response_b, pairs.label.tolist(), strict=True))
    assert got == valid
    assert pairs.skipped == len(rows) - len(valid)


@SETTINGS
@given(rows=st.lists(json_values, min_size=1, max_size=5), fmt=st.sampled_from(["auto", "pairs", "hh", "alpaca_eval"]))
def test_any_json_rows_give_pairs_or_one_located_error(rows, fmt):
    path = _write_jsonl(rows)
    try:
        pairs = load_pairs(str(path), fmt, skip_invalid=False)
    except DataError as err:
        _assert_located(err, path)
        return
    finally:
        path.unlink()
    assert len(pairs) == len(rows)
    assert all(isinstance(t, str) and t.strip() for t in [*pairs.prompt, *pairs.response_a, *pairs.response_b])
    assert bool(((pairs.label >= 0) & (pairs.label <= 1)).all())


@SETTINGS
@given(lines=st.lists(st.one_of(json_values.map(json.dumps), texts.filter(lambda s: "\n" not in s and "\r" not in s)),
                      min_size=1, max_size=5))
def test_raw_lines_including_broken_json_give_one_located_error(lines):
    """The loader never drops or invents a row silently: it returns one pair per non-blank line, or raises
    one error naming a line at or before the first line that is not JSON (with that line's text)."""
    fd, name = tempfile.mkstemp(suffix=".jsonl")
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as fh:
        fh.write("\n".join(lines) + "\n")
    path = Path(name)
    content = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]

    def is_json(line):
        try:
            json.loads(line)
            return True
        except ValueError:
            return False

    first_broken = next((n for n, line in content if not is_json(line)), None)
    try:
        pairs = load_pairs(str(path))
    except DataError as err:
        _assert_located(err, path)
        if first_broken is not None and err.line is not None:
            assert err.line <= first_broken, (str(err), first_broken)
            if err.line == first_broken:
                assert any(m in str(err) for m in ("malformed JSON", "not UTF-8", "NUL bytes"))
        return
    finally:
        path.unlink()
    assert first_broken is None and len(pairs) == len(content)


@SETTINGS
@given(rows=st.lists(st.one_of(json_values, st.fixed_dictionaries({"prompt": texts, "response": texts},
                                                                   optional={"id": json_scalars})),
                     min_size=1, max_size=5))
def test_score_rows_are_valid_or_one_located_error(rows):
    path = _write_jsonl(rows)
    got = []
    try:
        got = list(load_score_rows(str(path)))
    except DataError as err:
        _assert_located(err, path)
        assert err.field in (None, "prompt", "response")
        bad = next(i for i, r in enumerate(rows)  # an empty response is scored (a policy may emit one)
                   if not (isinstance(r, dict) and valid_text(r.get("prompt"))
                           and valid_text(r.get("response"), blank_ok=True)))
        assert err.line == bad + 1 and len(got) == 0
        return
    finally:
        path.unlink()
    assert [r for _, r in got] == rows


@SETTINGS
@given(n=st.integers(1, 4), scale=st.sampled_from([0.0, 1e-30, 1.0, 1e6, 2e7, 1e30]), bad=st.sampled_from(
    [None, "nan_emb", "inf_emb", "nan_label", "label_2", "label_neg", "shape"]))
def test_python_api_pairs_are_scored_finitely_or_refused(n, scale, bad):
    g = torch.Generator().manual_seed(n)
    p, a, b = (torch.randn(n, 8, generator=g) * scale for _ in range(3))
    label = torch.rand(n, generator=g)
    if bad == "nan_emb":
        a[0, 0] = float("nan")
    elif bad == "inf_emb":
        b[-1, -1] = float("inf")
    elif bad == "nan_label":
        label[0] = float("nan")
    elif bad == "label_2":
        label[0] = 2.0
    elif bad == "label_neg":
        label[0] = -0.1
    elif bad == "shape":
        b = b[:, :4]
    try:
        pairs = PairEmbeddings(p, a, b, label)
    except DataError as err:
        assert (bad is not None or scale > 1e8) and "PairEmbeddings" in str(err)
        return
    assert bad is None and scale <= 1e8
    rm = build_reward_model(ModelConfig(hidden_dim=8, num_objectives=3, feature_dim=2), emb_dim=8, seed=0)
    rm.fit_transform(pairs)
    loss = rm.elbo()(*rm.prepare(pairs).tensors(), size=n)
    out = rm.reward(pairs.prompt, pairs.response_a, num_samples=4)
    assert torch.isfinite(loss) and torch.isfinite(out.reward).all() and torch.isfinite(out.reward_std).all()
    assert torch.allclose(out.weights.sum(-1), torch.ones(n), atol=1e-5)


@pytest.fixture(scope="module")
def scored_checkpoint(tmp_path_factory):
    """A VRM checkpoint on a tiny random BERT (saved to disk like a real encoder)."""
    from vrm_pyro import EncoderConfig, save_checkpoint
    from vrm_pyro.encoders import TextEncoder

    from .conftest import save_tiny_bert

    root = tmp_path_factory.mktemp("fuzz")
    save_tiny_bert(root / "enc", max_positions=64)
    enc_cfg = EncoderConfig(name=str(root / "enc"), max_length=48, cache_dir=str(root / "cache"))
    encoder = TextEncoder(enc_cfg)
    rm = build_reward_model(ModelConfig(hidden_dim=8, num_objectives=3, feature_dim=2), emb_dim=16, seed=0)
    rm.fit_transform(PairEmbeddings(torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16), torch.ones(8)))
    save_checkpoint(root / "ckpt", rm, encoder=enc_cfg, encoder_identity=encoder.identity)
    return root


@settings(max_examples=max(FUZZ_EXAMPLES // 3, 10), deadline=None, derandomize=DERANDOMIZE,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries({"prompt": texts, "response": texts}, optional={"id": json_scalars}),
                     min_size=1, max_size=4))
def test_vrm_score_on_fuzzed_rows_writes_valid_rows_or_one_located_error(scored_checkpoint, rows):
    from vrm_pyro.scoring import score_file

    root = scored_checkpoint
    inp = _write_jsonl(rows)
    out = root / "out.jsonl"
    try:
        n = score_file(root / "ckpt", str(inp), str(out), chunk_size=2, num_samples=4, cache_dir=str(root / "cache"))
    except DataError as err:
        _assert_located(err, inp)
        assert any(not (valid_text(r["prompt"]) and valid_text(r["response"])) for r in rows)
        return
    except VRMError as err:  # pragma: no cover - any other library error is a failure of this contract
        pytest.fail(f"unexpected {type(err).__name__}: {err}")
    finally:
        inp.unlink()
    # split on "\n" only: a raw U+0085 or U+2028 inside a JSON string is not a line break in JSONL
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
    assert n == len(rows) == len(written)
    for row, got in zip(rows, written, strict=True):
        assert got["prompt"] == row["prompt"] and got["response"] == row["response"]
        assert math.isfinite(got["reward"]) and got["reward_std"] > 0 and len(got["weights"]) == 3
        assert got["reward_lcb"] == pytest.approx(got["reward"] - got["reward_std"], abs=1e-6)
