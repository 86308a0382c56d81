"""Loaders on the real shared files, the bundled slice, other formats, bad rows, splits."""

import gzip
import json

import numpy as np
import pytest

from vrm_pyro import DataError, load_pairs
from vrm_pyro.data import PreferencePairs
from vrm_pyro.formats import HH_SEPARATOR, bundled_data_path

from .conftest import ALPACA_FILE, HH_FILE, require


def test_hh_loader_on_the_shared_file():
    pairs = load_pairs(require(HH_FILE), format="hh", limit=50)
    assert len(pairs) == 50 and (pairs.label == 1.0).all()
    for p, a, b in zip(pairs.prompt, pairs.response_a, pairs.response_b):
        assert p.endswith(HH_SEPARATOR) and HH_SEPARATOR not in a and a != b
    first = json.loads(gzip.open(HH_FILE, "rt").readline())
    assert pairs.prompt[0] + pairs.response_a[0] == first["chosen"]
    assert pairs.prompt[0] + pairs.response_b[0] == first["rejected"]


def test_hh_invalid_rows_error_or_are_skipped_with_a_count():
    with pytest.raises(DataError, match=r"hh_rlhf_harmless.jsonl.gz:\d+: field 'chosen': empty final Assistant turn"):
        load_pairs(require(HH_FILE), format="hh")
    pairs = load_pairs(HH_FILE, format="hh", skip_invalid=True)
    assert pairs.skipped == 7 and len(pairs) == 2036 and len(pairs.errors) == 7


def test_alpaca_eval_loader_gives_soft_labels_and_keeps_generators():
    with pytest.raises(DataError, match=r"pairs.jsonl.gz:112: field 'output_2': the two responses are identical"):
        load_pairs(require(ALPACA_FILE), format="auto", limit=200)
    pairs = load_pairs(ALPACA_FILE, format="auto", limit=200, skip_invalid=True)
    raw = [json.loads(x) for x in gzip.open(ALPACA_FILE, "rt").readlines()[:250]]
    raw = [r for r in raw if r["output_1"] != r["output_2"]][:200]
    assert len(pairs) == 200 and pairs.skipped >= 1
    np.testing.assert_allclose(pairs.label, [2 - r["preference"] for r in raw], rtol=1e-6)
    assert pairs.meta[0]["generator_2"] == raw[0]["generator_2"]
    assert 0 < pairs.label.min() <= pairs.label.max() <= 1


def test_bundled_slice_is_small_real_and_default():
    assert bundled_data_path().stat().st_size < 1_100_000
    pairs = load_pairs()
    assert len(pairs) == 1000 and pairs.skipped == 0


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_pairs_format_with_strings_and_chat_messages(tmp_path):
    rows = [
        {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."},
        {"prompt": [{"role": "user", "content": "2+2?"}],
         "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]},
    ]
    pairs = load_pairs(_write_jsonl(tmp_path / "p.jsonl", rows))
    assert pairs.prompt == ["Hi?", "\n\nHuman: 2+2?"]
    assert pairs.response_a == ["Hello!", "\n\nAssistant: 4"]


def test_datasets_formats_and_column_mapping(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"question": ["a?", "b?", "c?"], "good": ["x", "y", "z"], "bad": ["q", "r", "s"],
                       "p": [0.9, 0.6, 1.0]})
    for name, write in (("d.csv", df.to_csv), ("d.parquet", df.to_parquet)):
        path = tmp_path / name
        write(path, index=False)
        pairs = load_pairs(path, "pairs", prompt_column="question", chosen_column="good", rejected_column="bad",
                           label_column="p")
        assert pairs.prompt == ["a?", "b?", "c?"] and pairs.response_b == ["q", "r", "s"]
        np.testing.assert_allclose(pairs.label, [0.9, 0.6, 1.0], rtol=1e-6)


@pytest.mark.parametrize("row,line,message", [
    ('{"prompt": "a", "chosen": "b", ', 2, r"x.jsonl:2: malformed JSON"),
    ({"prompt": "a", "chosen": "b"}, 2, r"x.jsonl:2: field 'rejected': missing"),
    ({"prompt": "", "chosen": "b", "rejected": "c"}, 2, r"x.jsonl:2: field 'prompt': empty text"),
    ({"prompt": "a", "chosen": 3, "rejected": "c"}, 2, r"x.jsonl:2: field 'chosen': expected a string.*got int"),
    ({"prompt": "a", "chosen": "same", "rejected": "same"}, 2, r"x.jsonl:2: field 'rejected': the two responses are identical"),
    ([1, 2], 2, r"x.jsonl:2: expected a JSON object, got list"),
])
def test_bad_rows_get_one_clear_error_naming_file_line_field(tmp_path, row, line, message):
    good = {"prompt": "p", "chosen": "c", "rejected": "r"}
    path = _write_jsonl(tmp_path / "x.jsonl", [good, row if isinstance(row, str) else json.dumps(row), good])
    with pytest.raises(DataError, match=message):
        load_pairs(path, "pairs")
    pairs = load_pairs(path, "pairs", skip_invalid=True)
    assert len(pairs) == 2 and pairs.skipped == 1


@pytest.mark.parametrize("pref,match", [(2.5, "preference must be in \\[1, 2\\]"), ("x", "expected a number"),
                                        (float("nan"), "not a finite number")])
def test_bad_alpaca_preferences(tmp_path, pref, match):
    row = {"instruction": "i", "output_1": "a", "output_2": "b", "preference": pref}
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(row).replace("NaN", "NaN") + "\n")
    with pytest.raises(DataError, match="a.jsonl:1: field 'preference': " + match):
        load_pairs(path, "alpaca_eval")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file does not exist"):
        load_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="unknown format 'xml'"):
        load_pairs(bundled_data_path(), "xml")
    path = _write_jsonl(tmp_path / "odd.jsonl", [{"a": 1}])
    with pytest.raises(DataError, match="cannot detect the format"):
        load_pairs(path)


def test_split_by_prompt_never_shares_a_prompt_and_is_seeded():
    pairs = load_pairs(require(ALPACA_FILE), limit=3000, skip_invalid=True)
    splits = pairs.split_by_prompt(0.1, 0.2, seed=0)
    sets = {k: set(v.prompt) for k, v in splits.items()}
    assert not (sets["train"] & sets["test"]) and not (sets["train"] & sets["validation"])
    assert not (sets["validation"] & sets["test"])
    assert sum(len(v) for v in splits.values()) == len(pairs)
    assert 0.15 < len(splits["test"]) / len(pairs) < 0.3
    again = pairs.split_by_prompt(0.1, 0.2, seed=0)
    assert again["test"].prompt == splits["test"].prompt
    assert pairs.split_by_prompt(0.1, 0.2, seed=1)["test"].prompt != splits["test"].prompt


def test_preference_pairs_checks_lengths():
    with pytest.raises(DataError, match="columns have different lengths"):
        PreferencePairs(["a"], ["b"], ["c", "d"], np.ones(1))
