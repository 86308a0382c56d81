"""End-to-end: `vrm train / eval / score / inspect` on small slices with the real MiniLM encoder."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from vrm_pyro.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    out = root / "run"
    rc = main(["train", "--data-limit", "40", "--epochs", "2", "--hidden-dim", "32", "--output", str(out),
               "--cache-dir", str(root / "cache"), "--no-progress"])
    assert rc == 0
    return root, out


def test_train_writes_vrm_and_baseline_checkpoints_and_prints_both(trained, capsys):
    root, out = trained
    for d in (out / "model", out / "baseline"):
        assert (d / "config.json").is_file() and (d / "model.safetensors").is_file()
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["kind"] == "vrm" and json.loads((out / "baseline" / "config.json").read_text())["kind"] == "bt"
    assert cfg["metadata"]["split_sizes"]["train"] + cfg["metadata"]["split_sizes"]["test"] <= 40
    assert 0.0 <= cfg["metadata"]["test_metrics"]["accuracy"] <= 1.0


def test_score_contract_keeps_fields_and_adds_reward_std_weights(trained, tmp_path):
    root, out = trained
    rows = [{"prompt": "How do I bake bread?", "response": "Flour, water, yeast; knead and bake.", "id": 7},
            {"prompt": "How do I bake bread?", "response": "No idea.", "extra": [1, 2]}]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for ckpt, kind in ((out, "vrm"), (out / "baseline", "bt")):
        dst = tmp_path / f"{kind}.jsonl"
        assert main(["score", "--checkpoint", str(ckpt), "--input", str(inp), "--output", str(dst),
                     "--cache-dir", str(root / "cache")]) == 0
        got = [json.loads(x) for x in dst.read_text().splitlines()]
        assert [g["id"] for g in got[:1]] == [7] and got[1]["extra"] == [1, 2]
        assert all(isinstance(g["reward"], float) for g in got)
        if kind == "vrm":
            assert all(g["reward_std"] > 0 and len(g["weights"]) == 8 for g in got)
            assert all(abs(g["reward_lcb"] - (g["reward"] - g["reward_std"])) < 1e-6 for g in got)
            assert abs(sum(got[0]["weights"]) - 1) < 1e-4 and got[0]["weights"] == got[1]["weights"]
        else:  # the default baseline is the Bayesian BT head: an epistemic std, no objective weights
            assert all(g["reward_std"] > 0 and g["weights"] is None for g in got)
            assert all(abs(g["reward_lcb"] - (g["reward"] - g["reward_std"])) < 1e-6 for g in got)


def test_eval_reports_model_and_baseline_and_reproduces_the_training_test_metrics(trained, tmp_path, capsys):
    root, out = trained
    report = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(out), "--cache-dir", str(root / "cache"), "--output", str(report)]) == 0
    metrics = json.loads((report / "report.json").read_text())["metrics"]
    for slot, kind in (("model", "vrm"), ("baseline", "bt")):
        saved = json.loads((out / slot / "config.json").read_text())["metadata"]["test_metrics"]
        assert metrics[kind]["n"] == saved["n"] and metrics[kind]["accuracy"] == pytest.approx(saved["accuracy"])
        assert metrics[kind]["nll"] == pytest.approx(saved["nll"], rel=1e-5)
    assert all((report / f).is_file() for f in ("report.md", "reliability.png", "uncertainty.png"))
    printed = capsys.readouterr().out
    assert "vrm" in printed and "bt" in printed and "len rho" in printed
    assert max(len(line) for line in printed.splitlines() if line.startswith(("model", "vrm", "bt"))) <= 100


def test_length_bias_best_of_n_objectives_and_spurious_commands(trained, tmp_path):
    root, out = trained
    cache = ["--cache-dir", str(root / "cache")]
    assert main(["length-bias", "--checkpoint", str(out), "--padding-samples", "5", "--output", str(tmp_path / "lb"),
                 *cache]) == 0
    lb = json.loads((tmp_path / "lb" / "length_bias.json").read_text())["models"]
    assert set(lb) == {"vrm", "bt"} and -1 <= lb["vrm"]["length_spearman"] <= 1 and lb["bt"]["padding_n"] == 5
    bon = tmp_path / "bon.jsonl"
    bon.write_text("".join(json.dumps({"prompt": f"Question {i}?", "candidates": [
        {"response": "Yes. " * (j + 1), "gold": float(j)} for j in range(4)]}) + "\n" for i in range(3)))
    assert main(["best-of-n", "--checkpoint", str(out), "--input", str(bon), "--output", str(tmp_path / "bon"),
                 "--select", "both", "--kappa", "2", *cache]) == 0
    curve = pd.read_csv(tmp_path / "bon" / "best_of_n.csv")
    # the default baseline (Bayesian BT head) has a reward_std, so it gets a pessimistic pick too
    assert set(curve.method) == {"vrm", "vrm lcb(k=2)", "bt", "bt lcb(k=2)", "random", "longest", "oracle"}
    assert set(curve.n) == {1, 2, 4}
    assert curve[(curve.method == "longest") & (curve.n == 4)].gold.item() == 3.0  # longest is best here
    from vrm_pyro.checkpoint import load_checkpoint
    from vrm_pyro.reports import training_prompts

    seen = sorted(training_prompts(load_checkpoint(out)))[:2]  # --held-out-from drops the run's own prompts
    bon.write_text("".join(json.dumps({"prompt": p, "candidates": [{"response": "Yes.", "gold": 0.0},
                                                                   {"response": "No.", "gold": 1.0}]}) + "\n"
                           for p in [*seen, "A prompt no split has?"]))
    assert main(["best-of-n", "--checkpoint", str(out), "--input", str(bon), "--output", str(tmp_path / "held"),
                 "--held-out-from", str(out), *cache]) == 0
    assert "1 prompts from" in (tmp_path / "held" / "best_of_n.md").read_text()
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Q{i % 2}", "response": "- a\n- b" if i % 2 else "I'm sorry."}) + "\n"
                            for i in range(6)))
    assert main(["objectives", "--checkpoint", str(out), "--input", str(rows), "--output", str(tmp_path / "obj"), *cache]) == 0
    md = (tmp_path / "obj" / "objectives.md").read_text()
    assert "## objective 0" in md and "| n/a |" in md  # no response has a code block: no correlation with it
    report = json.loads((tmp_path / "obj" / "objectives.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert report["objective 0"]["score_correlation"]["code_blocks"] is None
    assert main(["spurious", "--agreements", "0.5", "1.0", "--train-prompts", "40", "--output", str(tmp_path / "sp")]) == 0
    sp = pd.read_csv(tmp_path / "sp" / "spurious.csv")
    assert set(sp.model) == {"vrm", "bt"} and set(sp.agreement) == {0.5, 1.0}


def test_stress_reports_each_junk_kind_for_model_and_baseline(trained, tmp_path, capsys):
    root, out = trained
    inp = tmp_path / "real.jsonl"
    inp.write_text("".join(json.dumps({"prompt": f"How do I care for plant number {i}?",
                                       "response": f"Water plant {i} weekly. Give it light. Repot it in spring."}) + "\n"
                           for i in range(4)))
    assert main(["stress", "--checkpoint", str(out), "--input", str(inp), "--kinds", "repeated,echo,template",
                 "--output", str(tmp_path / "st"), "--cache-dir", str(root / "cache")]) == 0
    table = pd.read_csv(tmp_path / "st" / "stress.csv")
    assert set(table.model) == {"vrm", "bt"} and list(table.kind.unique()) == ["repeated", "echo", "template"]
    assert (table.n == 4).all() and table.junk_wins.between(0, 1).all()
    assert {"std_real", "std_junk"} <= set(table.columns)  # VRM's epistemic std, per kind
    assert (tmp_path / "st" / "stress.png").stat().st_size > 1000


def test_inspect_writes_weights_table_and_heatmap(trained, tmp_path, capsys):
    root, out = trained
    inp = tmp_path / "prompts.jsonl"
    inp.write_text(json.dumps({"prompt": "Tell me a joke"}) + "\n" + json.dumps({"prompt": "How to pick a lock?"}) + "\n")
    assert main(["inspect", "--checkpoint", str(out), "--input", str(inp), "--output", str(tmp_path / "w.csv"),
                 "--plot", str(tmp_path / "w.png"), "--cache-dir", str(root / "cache")]) == 0
    table = pd.read_csv(tmp_path / "w.csv")
    assert list(table.columns[:4]) == ["prompt", "w0", "w0_lo", "w0_hi"] and len(table) == 2
    assert ((table["w0_lo"] <= table["w0"]) & (table["w0"] <= table["w0_hi"])).all()
    assert (tmp_path / "w.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["inspect", "--checkpoint", str(out), "--input", str(inp), "--output", str(tmp_path / "w2.parquet"),
                 "--clusters", "2", "--compare", "0", "1", "--cache-dir", str(root / "cache")]) == 0
    table = pd.read_parquet(tmp_path / "w2.parquet")
    assert sorted(table.cluster) == [0, 1]
    printed = capsys.readouterr().out
    assert "p_a_greater" in printed and "prompt B [1]: 'How to pick a lock?'" in printed
    assert main(["inspect", "--checkpoint", str(out), "--input", str(inp), "--compare", "0", "5",
                 "--output", str(tmp_path / "w3.csv"), "--cache-dir", str(root / "cache")]) == 2


def test_errors_are_one_line_without_traceback(trained, tmp_path, capsys):
    root, out = trained
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "response": "fine"}\n{"prompt": "x", "response": 5}\n')
    assert main(["score", "--checkpoint", str(out), "--input", str(bad), "--output", str(tmp_path / "o.jsonl"),
                 "--cache-dir", str(root / "cache")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2: field 'response': expected a string" in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()  # a command that fails writes no output file
    (tmp_path / "empty.jsonl").write_text("\n")
    assert main(["score", "--checkpoint", str(out), "--input", str(tmp_path / "empty.jsonl"), "--output",
                 str(tmp_path / "o.jsonl"), "--cache-dir", str(root / "cache")]) == 2
    assert "empty.jsonl: the input has no rows to score" in capsys.readouterr().err
    import gzip

    (tmp_path / "packed.jsonl").write_bytes(gzip.compress(b'{"prompt": "p", "response": "r"}\n'))
    assert main(["score", "--checkpoint", str(out), "--input", str(tmp_path / "packed.jsonl"), "--output",
                 str(tmp_path / "o.jsonl"), "--cache-dir", str(root / "cache")]) == 2
    assert "packed.jsonl:1: not UTF-8 text" in capsys.readouterr().err and not (tmp_path / "o.jsonl").exists()
    assert main(["train", "--data", str(tmp_path / "none.jsonl"), "--no-progress", "--output", str(tmp_path / "r")]) == 2
    assert "none.jsonl: file does not exist" in capsys.readouterr().err
    assert main(["train", "--weight-prior", "gamma", "--data-limit", "10", "--no-progress",
                 "--cache-dir", str(root / "cache"), "--output", str(tmp_path / "r")]) == 2
    assert "unknown weight prior 'gamma'" in capsys.readouterr().err


def test_a_train_that_cannot_start_leaves_the_run_already_there(tmp_path, capsys):
    """A typo in --data must not overwrite OUTPUT's run.json (what --resume reads) nor remove its snapshots."""
    out = tmp_path / "run"
    snapshot = out / "checkpoints" / "model" / "step_00000100.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"weights")
    (out / "run.json").write_text('{"schema_version": 1, "the": "run already here"}')
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": 3}\n')
    cases = [(["--data", str(tmp_path / "typo.jsonl")], "typo.jsonl: file does not exist"),
             (["--data", str(tmp_path / "bad.jsonl")], "bad.jsonl:1: field 'rejected': expected a string"),
             (["--data-limit", "20", "--encoder", str(tmp_path / "no-encoder")], "cannot load encoder"),
             (["--data-limit", "20", "--encoder", str(tmp_path / "no-llm"), "--encoder-mode", "lora",
               "--representation", "joint", "--monotone", "", "--gate", ""], "cannot load encoder"),
             (["--data-limit", "20", "--recipe", "likelihood", "--likelihood-model", str(tmp_path / "no.gguf")],
              "no.gguf' (EncoderConfig.likelihood_model, --likelihood-model) does not exist")]
    for args, error in cases:
        assert main(["train", *args, "--output", str(out), "--no-progress"]) == 2
        assert error in capsys.readouterr().err
        assert json.loads((out / "run.json").read_text()) == {"schema_version": 1, "the": "run already here"}
        assert snapshot.read_bytes() == b"weights"


def test_eval_names_a_missing_group_field_before_encoding_anything(trained, monkeypatch, capsys):
    from vrm_pyro import encoders

    root, out = trained
    monkeypatch.setattr(encoders, "embed_pairs", lambda *a, **k: pytest.fail("texts were encoded before the check"))
    assert main(["eval", "--checkpoint", str(out), "--cache-dir", str(root / "cache"), "--group-column", "genre"]) == 2
    assert "field 'genre': no row has a 'genre' field" in capsys.readouterr().err


def test_console_script_runs_as_a_subprocess(trained):
    proc = subprocess.run([sys.executable, "-m", "vrm_pyro.cli", "train", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    for flag in ("--data", "--format", "--model", "--encoder", "--seed", "--output", "--num-objectives",
                 "--weight-prior", "--kl-weight-w", "--encoder-mode", "--lora-r", "--representation", "--nuisance",
                 "--erase-nuisance", "--augment", "--path", "--free-bits"):
        assert flag in proc.stdout
    assert "(default: 8) (default: 8)" not in proc.stdout and "K: number of latent objectives" in proc.stdout


def test_score_resume_skips_done_rows_and_repairs_a_cut_line(trained, tmp_path):
    root, out = trained
    rows = [{"prompt": f"Question {i}?", "response": f"Answer number {i}."} for i in range(5)]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    full = tmp_path / "full.jsonl"
    assert main(["score", "--checkpoint", str(out), "--input", str(inp), "--output", str(full),
                 "--cache-dir", str(root / "cache"), "--chunk-size", "2"]) == 0
    lines = full.read_text().splitlines(keepends=True)
    part = tmp_path / "part.jsonl"
    from vrm_pyro.scoring import partial_path, score_file

    partial_path(part).write_text("".join(lines[:2]) + lines[2][:15])  # killed while writing row 3
    written = score_file(out, str(inp), str(part), cache_dir=str(root / "cache"), resume=True)
    assert written == 3 and not partial_path(part).exists()
    got, ref = [json.loads(x) for x in part.read_text().splitlines()], [json.loads(x) for x in lines]
    assert [g["prompt"] for g in got] == [r["prompt"] for r in ref]
    assert all(abs(g["reward"] - r["reward"]) < 1e-5 for g, r in zip(got, ref))  # batches differ: float rounding


def test_recipe_sets_the_defaults_and_explicit_options_win():
    from vrm_pyro.cli import build_parser, main
    from vrm_pyro.config import (
        CLOSED_LAST_LINE_GATE,
        DEFAULT_GATE,
        LIKELIHOOD_RECIPE,
        ORDER_BLIND_GATE,
        ORDER_BLIND_REPRESENTATION,
        ROUND4_REPRESENTATION,
        ROUND16_GATE,
        TRAIN_RECIPE,
        ModelConfig,
    )

    plain = build_parser().parse_args(["train"])
    # since round 27 the order-blind base with the distinct pieces' repeats and the prompt's trigram overlap; since
    # round 29 the ending read off the last line (last_line) in place of line_ending; since round 30 with its closing
    # forms read as whole (closed_last_line)
    assert plain.representation == TRAIN_RECIPE["representation"] == (
        ORDER_BLIND_REPRESENTATION.replace("+line_ending", "+closed_last_line") + "+piece_repeats+prompt_overlap")
    # since round 23 the order-blind gate's columns as a conjunctive gate of three factors; since round 27 the
    # repetition factor reads repeated_piece_share for repeated_sentences and the completeness factor prompt_jaccard;
    # since round 29 the completeness factor reads last_line for line_ending, since round 30 closed_last_line
    relevance, repetition, completeness = ModelConfig(gate=DEFAULT_GATE).gate_factors
    assert DEFAULT_GATE == CLOSED_LAST_LINE_GATE
    assert "closed_last_line" in completeness and "line_ending" not in DEFAULT_GATE
    assert "last_line" not in DEFAULT_GATE.replace("closed_last_line", "")
    assert "repeated_piece_share" in repetition and "repeated_sentences" not in repetition
    assert "prompt_overlap" in completeness and "prompt_copy" in completeness and "prompt_overlap" not in relevance
    assert sorted(DEFAULT_GATE.replace(";", ",").split(",")) == sorted(
        ORDER_BLIND_GATE.replace("repeated_sentences", "repeated_piece_share,prompt_overlap")
        .replace("line_ending", "closed_last_line").split(","))
    # rounds 16-18's default, one option away; the rest of the recipe as the default's
    windowed = build_parser("windowed").parse_args(["train", "--recipe", "windowed"])
    assert windowed.representation == ROUND4_REPRESENTATION + "+prompt_copy+line_ending+order_score"
    assert windowed.gate == ROUND16_GATE and (windowed.augment, windowed.order_l2) == (plain.augment, plain.order_l2)
    assert (plain.order_features, plain.order_l2) == ("sentence_words", 1e-4)
    # since round 20 the reward rises with the bag's prompt-response cosine; the windowed recipe has no bag
    assert (plain.monotone, plain.monotone_prior) == ("bag_cosine", "log_normal")
    assert (windowed.monotone, windowed.monotone_prior) == ("", "half_normal")
    assert plain.augment == "rrm,content_free:0.1"
    lm = build_parser("likelihood").parse_args(["train", "--recipe", "likelihood"])
    # the LM recipe keeps what it was measured with: round 4's representation and RRM's augmentation alone
    assert lm.representation == LIKELIHOOD_RECIPE["representation"] == ROUND4_REPRESENTATION + "+likelihood_contrast"
    assert lm.augment == "rrm"
    assert (lm.monotone, lm.monotone_prior, lm.likelihood_model) == ("pmi", "log_normal", "smollm2")
    assert (plain.gate, plain.gate_lr) == (DEFAULT_GATE, 1e-2) and (lm.gate, lm.gate_lr) == ("", None)
    for gate in (DEFAULT_GATE, ROUND16_GATE):
        assert "prompt_echo" not in gate and "prompt_copy" in gate and "clean_ending" not in gate
    assert "line_ending" in ROUND16_GATE
    assert build_parser("likelihood").parse_args(["train", "--monotone", ""]).monotone == ""
    with pytest.raises(SystemExit):  # an unknown recipe: argparse's one-line error
        main(["train", "--recipe", "fancy"])


def test_main_reads_the_recipe_first_and_resume_refuses_one(monkeypatch, tmp_path, capsys):
    from vrm_pyro import cli

    seen = {}
    monkeypatch.setattr(cli, "cmd_train", lambda args: seen.update(vars(args)) or 0)
    assert cli.main(["train", "--recipe", "likelihood", "--output", str(tmp_path / "r")]) == 0
    assert (seen["monotone"], seen["monotone_prior"], seen["likelihood_model"]) == ("pmi", "log_normal", "smollm2")
    assert cli.main(["train", "--recipe", "likelihood", "--monotone-prior", "half_normal"]) == 0
    assert seen["monotone_prior"] == "half_normal"  # an explicit option wins over the recipe
    from vrm_pyro.errors import ConfigError

    args = cli.build_parser("likelihood").parse_args(["train", "--resume", str(tmp_path), "--recipe", "likelihood"])
    with pytest.raises(ConfigError, match="drop --recipe"):
        cli._resume_configs(args, {})
