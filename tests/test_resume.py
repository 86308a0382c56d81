"""Training snapshots and exact resume: `vrm train` killed with SIGKILL at random steps and resumed
ends with the parameters and held-out metrics of an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vrm_pyro import ModelConfig, PairEmbeddings, TrainConfig, build_reward_model, fit
from vrm_pyro.errors import ConfigError, NumericalError
from vrm_pyro.snapshots import TrainingSnapshots

E = 12
#: the stated tolerance of the resume test (max |difference| of any parameter); measured: 0.0
RESUME_ATOL = 1e-6


def _pairs(n, seed):
    g = torch.Generator().manual_seed(seed)
    p, a, b = (torch.randn(n, E, generator=g) for _ in range(3))
    label = (torch.rand(n, generator=g) < torch.sigmoid(3 * (a - b)[:, 0])).float()
    return PairEmbeddings(p, a, b, label)


def _state_equal(a, b, atol=RESUME_ATOL):
    return set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def test_resume_in_process_gives_the_uninterrupted_result(tmp_path):
    train, val = _pairs(96, 0), _pairs(32, 1)
    cfg = TrainConfig(epochs=4, batch_size=16, save_every=5, keep_last=2, progress=False, patience=0)
    model_cfg = ModelConfig(hidden_dim=16, num_objectives=3, feature_dim=2)

    full = build_reward_model(model_cfg, emb_dim=E, seed=0)
    ref = fit(full, train, val, cfg)

    # interrupted: the same run with only the first 2 epochs' worth of steps, then resumed
    part = build_reward_model(model_cfg, emb_dim=E, seed=0)
    fit(part, train, val, cfg.replace(epochs=2), checkpoint_dir=tmp_path / "snap")
    snaps = TrainingSnapshots(tmp_path / "snap", keep_last=2)
    index = snaps.index()
    assert len([n for n in index["snapshots"] if n != index["best"]]) <= 2 and index["best"] in index["snapshots"]
    resumed = build_reward_model(model_cfg, emb_dim=E, seed=123)  # a different init: all of it comes from the snapshot
    # the 2-epoch run ended at its last snapshot; continuing to 4 epochs is a resume mid-run
    res = fit(resumed, train, val, cfg, checkpoint_dir=tmp_path / "snap", resume=True)
    assert _state_equal(full.state_dict(), resumed.state_dict())
    assert [h["val_nll"] for h in res.history] == [h["val_nll"] for h in ref.history]
    assert res.best_epoch == ref.best_epoch and res.steps == ref.steps


def test_nan_stops_with_step_and_site_and_keeps_the_last_good_snapshot(tmp_path):
    train = _pairs(64, 0)
    rm = build_reward_model(ModelConfig(model="bt"), emb_dim=E)
    cfg = TrainConfig(epochs=3, batch_size=16, save_every=2, progress=False)

    calls = {"n": 0}
    original = rm.model.forward

    def poisoned(*args, **kw):  # the ELBO turns NaN from the 7th step on
        calls["n"] += 1
        if calls["n"] >= 7:
            args = (args[0], args[1] * float("nan"), *args[2:])
        return original(*args, **kw)

    rm.model.forward = poisoned
    with pytest.raises(NumericalError, match=r"step 6 .*site 'label'.*last good snapshot .*step-00000006"):
        fit(rm, train, None, cfg, checkpoint_dir=tmp_path / "snap")
    assert TrainingSnapshots(tmp_path / "snap").latest.name == "step-00000006"


# ---------------------------------------------------------------------------- killed subprocess


@pytest.fixture
def tiny_encoder_dir(tiny_bert, tmp_path):
    model, tok = tiny_bert
    path = tmp_path / "tiny-bert"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _train_cmd(out, encoder, cache):
    return [sys.executable, "-m", "vrm_pyro.cli", "train", "--output", str(out), "--encoder", str(encoder),
            "--max-length", "64", "--data-limit", "120", "--epochs", "6", "--batch-size", "8", "--hidden-dim", "64",
            "--save-every", "3", "--keep-last", "2", "--patience", "0", "--device", "cpu", "--cache-dir", str(cache),
            "--no-progress"]


def _latest_step(out: Path) -> int:
    try:
        index = json.loads((out / "checkpoints" / "model" / "index.json").read_text())
        return int(index["latest"].split("-")[1])
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return -1


def test_vrm_train_killed_at_random_steps_resumes_to_the_same_parameters(tiny_encoder_dir, tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cache = tmp_path / "cache"
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_train_cmd(ref_out, tiny_encoder_dir, cache), check=True, env=env, capture_output=True, timeout=300)

    rng = random.Random(20261124)  # seeded kill points, as the rest of the suite
    total_steps = json.loads((ref_out / "model" / "config.json").read_text())["metadata"]["history"][-1]["step"]
    targets = sorted(rng.sample(range(4, total_steps - 10), 3))
    kills = 0
    cmd = _train_cmd(out, tiny_encoder_dir, cache)
    for target in targets:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while proc.poll() is None and _latest_step(out) < target and time.time() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        cmd = [sys.executable, "-m", "vrm_pyro.cli", "train", "--resume", str(out), "--no-progress"]
    print(f"resume test: {kills} SIGKILLs survived at steps >= {targets} of {total_steps}")
    assert kills >= 2, f"the run finished before it could be killed ({kills} kills)"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    for slot in ("model", "baseline"):
        ref = load_file(str(ref_out / slot / "model.safetensors"))
        got = load_file(str(out / slot / "model.safetensors"))
        assert _state_equal(ref, got), slot
        ref_meta = json.loads((ref_out / slot / "config.json").read_text())["metadata"]
        got_meta = json.loads((out / slot / "config.json").read_text())["metadata"]
        assert got_meta["test_metrics"] == ref_meta["test_metrics"]
        assert [h["val_nll"] for h in got_meta["history"]] == [h["val_nll"] for h in ref_meta["history"]]


def test_resume_refuses_conflicting_options(tmp_path, capsys):
    from vrm_pyro.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({
        "schema_version": 1, "data": {}, "encoder": {}, "model": {"num_objectives": 4}, "train": {},
        "compare_baseline": True}))
    assert main(["train", "--resume", str(out), "--num-objectives", "6"]) == 2
    assert "--num-objectives 6 (the run has 4)" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2


def test_resume_of_an_older_run_takes_its_saved_options_not_todays_defaults(tmp_path):
    """A plain ``--resume`` gives no options: the parser's defaults are ``TRAIN_RECIPE``'s, which must not count as
    options that conflict with a run started under another recipe (or with ``--path-prior dimension``)."""
    from vrm_pyro.cli import _resume_configs, build_parser, configs_from_args

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({
        "schema_version": 1, "data": {"augment": "rrm", "augment_rate": 0.3}, "encoder": {},
        "model": {"path_prior": "dimension", "path_prior_scale": 2.0, "bt_head": "linear"}, "train": {},
        "compare_baseline": True}))
    args = build_parser().parse_args(["train", "--resume", str(out)])
    cfg = _resume_configs(args, configs_from_args(args))
    assert cfg["ModelConfig"].path_prior == "dimension" and cfg["DataConfig"].augment_rate == 0.3
    args = build_parser().parse_args(["train", "--resume", str(out), "--path-prior-scale", "3"])
    with pytest.raises(ConfigError, match=r"--path-prior-scale 3.0 \(the run has 2.0\)"):  # a given option still
        _resume_configs(args, configs_from_args(args))
