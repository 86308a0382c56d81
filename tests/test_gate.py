"""The validity gate (``ModelConfig.gate``): ``log sigmoid(v . h_G + c)`` added to the reward, VRM and BT alike."""

import pytest
import torch

from vrm_pyro import EncoderConfig, ModelConfig, TrainConfig, build_reward_model, fit
from vrm_pyro.covariates import COHERENCE_STATISTICS
from vrm_pyro.data import PairEmbeddings
from vrm_pyro.errors import ConfigError
from vrm_pyro.representations import column_names, part_columns, representation_dim

E = 8
REP = "response+interaction+statistics"
F = representation_dim(REP, E)  # response E, interaction 2E + 1, statistics 7
COSINE, STATS = 3 * E, slice(3 * E + 1, 3 * E + 8)
VALID = 3 * E + 1  # the first statistic: what tells junk from an answer in the data below


def test_part_columns_name_parts_and_the_cosine():
    cols = part_columns(REP, E, ["cosine", "statistics"])
    assert cols.shape == (F,) and cols.dtype == torch.bool
    assert [i for i, v in enumerate(cols.tolist()) if v] == [COSINE, *range(F)[STATS]]
    assert part_columns(REP, E, ["response"]).nonzero().flatten().tolist() == list(range(E))
    names = column_names(REP, E)  # one per column of h, in order
    assert len(names) == F and names[COSINE] == "cosine" and names[0] == "response[0]"
    assert [names[i] for i in cols.nonzero().flatten().tolist()][1:] == list(COHERENCE_STATISTICS)
    # single statistics by name (vrm_pyro.representations.NAMED_COLUMNS), and a whole part wins over its columns
    one = part_columns(REP, E, ["cosine", "clean_ending", "prompt_echo"]).nonzero().flatten().tolist()
    assert one == [COSINE] + sorted(STATS.start + COHERENCE_STATISTICS.index(n) for n in ("clean_ending", "prompt_echo"))
    assert torch.equal(part_columns(REP, E, ["clean_ending", "statistics"]), part_columns(REP, E, ["statistics"]))
    with pytest.raises(ConfigError, match=r"'common_bigrams' needs the representation part 'order'"):
        part_columns(REP, E, ["common_bigrams"])
    with pytest.raises(ConfigError, match=r"add \+order, or drop the gate \(--gate ''"):
        part_columns(REP, E, ["order"])
    with pytest.raises(ConfigError, match="unknown part 'fluency'"):
        part_columns(REP, E, ["fluency"])
    with pytest.raises(ConfigError, match="whiten"):
        ModelConfig(gate="statistics", feature_transform="whiten")
    with pytest.raises(ConfigError, match="there is no gate"):
        ModelConfig(gate_by_prompt=True)
    with pytest.raises(ConfigError, match="representation="):
        build_reward_model(ModelConfig(gate="statistics"), emb_dim=E, response_dim=F)


@pytest.mark.parametrize("representation, gate, endings", [
    ("ORDER_BLIND_REPRESENTATION", "CONJUNCTIVE_GATE", {"ends_like_its_lines"}),
    ("LAST_LINE_REPRESENTATION", "LAST_LINE_GATE", {"last_line_complete"}),
    ("LAST_LINE_BESIDE_REPRESENTATION", "LAST_LINE_BESIDE_GATE", {"ends_like_its_lines", "last_line_complete"}),
    ("PIECE_REPEATS_REPRESENTATION", "PIECE_REPEATS_GATE", {"ends_like_its_lines"}),
    ("PROMPT_OVERLAP_REPRESENTATION", "PROMPT_OVERLAP_GATE", {"ends_like_its_lines"}),
    ("LAST_LINE_OVERLAP_REPRESENTATION", "LAST_LINE_OVERLAP_GATE", {"last_line_complete"}),
    ("CLOSED_LAST_LINE_REPRESENTATION", "CLOSED_LAST_LINE_GATE", {"last_line_closed"}),
])
def test_each_shipped_gate_reads_its_representation_one_column_per_factor(representation, gate, endings):
    """The gates in :mod:`vrm_pyro.config` against the representations they are run with: every name resolves, no
    column sits in two factors, and the completeness factor holds the ending columns each variant says it holds."""
    from vrm_pyro import config
    from vrm_pyro.representations import gate_factor_columns

    rep = getattr(config, representation)
    factors = ModelConfig(gate=getattr(config, gate)).gate_factors
    columns, factor = gate_factor_columns(rep, E, factors)
    names = [n for n, on in zip(column_names(rep, E), columns.tolist()) if on]
    completeness = {n for n, k in zip(names, factor.tolist()) if k == 2}
    assert len(factors) == 3 and completeness & {"ends_like_its_lines", "last_line_complete", "last_line_closed"} == endings
    assert {"bag_cosine", "bag_prompt_coverage"} == {n for n, k in zip(names, factor.tolist()) if k == 0}


def _pairs(n: int, seed: int, junk_share: float = 0.3) -> PairEmbeddings:
    """Real pairs labelled by column 0 (quality) *and* against the validity column (the judge prefers the less
    "valid-looking" of two real answers: a tug of war), plus pairs where a real answer beats junk whose validity
    column is far lower and whose quality column is random. Every real answer has validity in [1, 3], junk in
    [-3, -1]."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randn(n, E, generator=g)
    a, b = torch.randn(n, F, generator=g), torch.randn(n, F, generator=g)
    a[:, VALID], b[:, VALID] = 1 + 2 * torch.rand(n, generator=g), 1 + 2 * torch.rand(n, generator=g)
    label = torch.bernoulli(torch.sigmoid(3.0 * (a[:, 0] - b[:, 0]) - 2.0 * (a[:, VALID] - b[:, VALID])), generator=g)
    junk = torch.rand(n, generator=g) < junk_share
    b[junk, VALID] = -1 - 2 * torch.rand(int(junk.sum()), generator=g)
    b[junk, 0] = 2.0 * torch.randn(int(junk.sum()), generator=g)  # junk can look like quality
    label[junk] = 1.0
    return PairEmbeddings(prompt, a, b, label, junk=junk)


def _junk_wins_and_accuracy(rm, test: PairEmbeddings, junk: torch.Tensor) -> tuple[float, float]:
    ra, rb = rm.reward(test.prompt, test.response_a).reward, rm.reward(test.prompt, test.response_b).reward
    real = ~junk
    accuracy = float(((ra[real] > rb[real]) == (test.label[real] > 0.5)).float().mean())
    return float((rb[junk] >= ra[junk]).float().mean()), accuracy


@pytest.mark.parametrize("model", ["vrm", "bt"])
def test_the_gate_sinks_junk_that_the_linear_reward_trades_off(model, tmp_path):
    """With the judge pulling the validity column's weight down among real answers, a linear reward lets junk with a
    high quality column win; the gate, saturated on real answers, sinks it, at no cost in accuracy on real pairs,
    and a checkpoint (with and without the encoder config) scores alike."""
    from vrm_pyro.checkpoint import load_checkpoint, save_checkpoint

    train, val = _pairs(1200, 0), _pairs(200, 1)
    test = _pairs(600, 2, junk_share=0.5)
    junk = test.response_b[:, VALID] < 0
    cfg = ModelConfig(model=model, bt_head="bayesian_linear", path_prior="part", num_objectives=2, feature_dim=2,
                      hidden_dim=16, path_prior_scale=2.0)
    results = {}
    for gate in ("", "statistics"):
        rm = build_reward_model(cfg.replace(gate=gate), emb_dim=E, response_dim=F, representation=REP, seed=0)
        fit(rm, train, val, TrainConfig(epochs=25, lr=2e-2, patience=25, progress=False, gate_lr=0.2))
        results[gate] = _junk_wins_and_accuracy(rm, test, junk)
    (plain_junk, plain_acc), (gate_junk, gate_acc) = results[""], results["statistics"]
    assert plain_junk > 0.05, results
    assert gate_junk < plain_junk / 3, results
    assert gate_acc >= plain_acc - 0.03, results
    # real answers sit where the gate has saturated: its term moves them little, junk a lot
    with torch.no_grad():
        g = rm.model.gate_moments(rm.guide, test.prompt, rm.transform.features(test.response_a), 32, 0)[0]
        g_junk = rm.model.gate_moments(rm.guide, test.prompt[junk], rm.transform.features(test.response_b[junk]), 32,
                                       0)[0]
    assert float(g.mean()) > -0.5 and float(g_junk.mean()) < float(g.mean()) - 2.0, (float(g.mean()), float(g_junk.mean()))
    for name, encoder in (("with", EncoderConfig(name="tiny", representation=REP)), ("without", None)):
        loaded = load_checkpoint(save_checkpoint(tmp_path / name, rm, encoder=encoder)).reward_model
        assert torch.equal(loaded.model.gate.columns, rm.model.gate.columns)
        torch.testing.assert_close(loaded.reward(test.prompt, test.response_b).reward,
                                   rm.reward(test.prompt, test.response_b).reward)


def test_the_reward_and_the_pair_draws_agree_on_the_gate():
    """``reward`` (the gate's mean over seeded draws of its sites) and ``difference_samples`` (the same draws) give the
    same expected difference for a BT head with a point path; ``reward_std`` carries the gate's spread."""
    train, val = _pairs(300, 3), _pairs(60, 4)
    rm = build_reward_model(ModelConfig(model="bt", bt_head="linear", gate="cosine,statistics"), emb_dim=E,
                            response_dim=F, representation=REP, seed=0)
    fit(rm, train, val, TrainConfig(epochs=3, progress=False))
    out_a, out_b = rm.reward(val.prompt, val.response_a), rm.reward(val.prompt, val.response_b)
    with torch.no_grad():
        d = rm.model.difference_samples(rm.guide, val.prompt, rm.transform.features(val.response_a),
                                        rm.transform.features(val.response_b), num_samples=32, seed=0)
    torch.testing.assert_close(d.mean(0), out_a.reward - out_b.reward, rtol=1e-4, atol=1e-4)
    assert out_a.reward_std is not None and bool((out_a.reward_std > 0).all())


@pytest.mark.parametrize("in_label", [True, False])
def test_the_gate_enters_the_label_only_when_asked(in_label):
    """``gate_in_label=False``: the label's likelihood does not depend on the gate's sites (the gate is taught by
    the validity observations alone), but the reward still adds its term."""
    from pyro import poutine

    rm = build_reward_model(ModelConfig(model="bt", bt_head="bayesian_linear", gate="statistics",
                                        gate_in_label=in_label), emb_dim=E, response_dim=F, representation=REP, seed=0)
    data = _pairs(16, 5)
    batch = data.batch(slice(None))

    def label_log_prob(weight):
        conditioned = poutine.condition(rm.model, data={"gate_weight": weight, "gate_bias": torch.zeros(1),
                                                        "theta": torch.zeros(F)})
        trace = poutine.trace(conditioned).get_trace(*batch)
        trace.compute_log_prob()
        return trace.nodes["label"]["log_prob_sum"], trace.nodes["valid_b"]["log_prob_sum"]

    (label_0, valid_0), (label_1, valid_1) = label_log_prob(torch.zeros(7)), label_log_prob(torch.full((7,), 2.0))
    assert bool(label_0 != label_1) == in_label
    assert bool(valid_0 != valid_1)  # the validity observations always see the gate


def _gate_sites() -> dict:
    """Fixed sites for a ``statistics`` gate (7 columns) on a zero quality path."""
    return {"gate_weight": torch.linspace(-1.0, 2.0, 7), "gate_bias": torch.full((1,), 0.5), "theta": torch.zeros(F)}


def _fit_save_and_load(rm, data: PairEmbeddings, path):
    """Fit ``rm`` briefly, save it to ``path`` and load it back: the loaded model scores ``data`` as ``rm`` does."""
    from vrm_pyro.checkpoint import load_checkpoint, save_checkpoint

    fit(rm, data, data, TrainConfig(epochs=2, progress=False))
    loaded = load_checkpoint(save_checkpoint(path, rm)).reward_model
    torch.testing.assert_close(loaded.reward(data.prompt, data.response_b).reward,
                               rm.reward(data.prompt, data.response_b).reward)
    return loaded


def test_gate_scale_tempers_the_term_not_the_validity_fit(tmp_path):
    """``gate_scale`` kappa: at the same sites the reward's gate term and its part of the label's logit are kappa
    times the plain ones (``P(valid)^kappa x exp(quality)``), the validity observations are unchanged, and a
    checkpoint keeps kappa."""
    from pyro import poutine

    data = _pairs(16, 7, junk_share=0.5)
    sites = _gate_sites()

    def run(scale):
        rm = build_reward_model(ModelConfig(model="bt", bt_head="bayesian_linear", gate="statistics", gate_scale=scale),
                                emb_dim=E, response_dim=F, representation=REP, seed=0)
        trace = poutine.trace(poutine.condition(rm.model, data=sites)).get_trace(*data.batch(slice(None)))
        trace.compute_log_prob()
        terms = [rm.model.gate.logits(sites, r) for r in (data.response_a, data.response_b)]
        return rm, trace.nodes["_RETURN"]["value"], trace.nodes["valid_b"]["log_prob"], terms

    _, logits_1, valid_1, (a_1, b_1) = run(1.0)
    rm, logits_3, valid_3, (a_3, b_3) = run(3.0)
    torch.testing.assert_close(b_3, 3.0 * b_1)
    assert bool((b_1 < 0).all())
    # the quality path is zero at these sites, so the label's logit is the gate's part alone (no nuisance term)
    torch.testing.assert_close(logits_1, a_1 - b_1)
    torch.testing.assert_close(logits_3, 3.0 * logits_1)
    torch.testing.assert_close(valid_3, valid_1)
    loaded = _fit_save_and_load(rm, data, tmp_path / "kappa")
    assert loaded.model.gate.scale == 3.0 and loaded.config.gate_scale == 3.0
    with pytest.raises(ConfigError, match="gate_scale must be > 0"):
        ModelConfig(gate="statistics", gate_scale=0.0)


def test_gate_clip_bounds_what_one_column_can_take_off(tmp_path):
    """``gate_clip`` c: the validity logits are the plain gate's on ``c tanh(h_G / c)``: the same near 0, while a
    column 20 sd out (a song's chorus on the repetition columns) moves them by at most ``c |w|`` instead of ``20 |w|``;
    a checkpoint keeps c."""
    sites = _gate_sites()
    gates = {c: build_reward_model(ModelConfig(model="bt", bt_head="bayesian_linear", gate="statistics", gate_clip=c),
                                   emb_dim=E, response_dim=F, representation=REP, seed=0) for c in (0.0, 3.0)}
    h = torch.zeros(4, F)
    h[1, VALID], h[2, VALID], h[3, VALID] = 0.01, 20.0, -20.0
    plain, clipped = (gates[c].model.gate.validity_logits(sites, h) for c in (0.0, 3.0))
    w = float(sites["gate_weight"][0])
    torch.testing.assert_close(plain, 0.5 + w * h[:, VALID])
    torch.testing.assert_close(clipped, 0.5 + w * 3.0 * torch.tanh(h[:, VALID] / 3.0))
    torch.testing.assert_close(clipped[:2], plain[:2], atol=1e-6, rtol=0)
    assert float((clipped[2:] - 0.5).abs().max()) < 3.0 * abs(w) < float((plain[2:] - 0.5).abs().min())
    loaded = _fit_save_and_load(gates[3.0], _pairs(16, 7, junk_share=0.5), tmp_path / "clip")
    assert loaded.model.gate.clip == 3.0 and loaded.config.gate_clip == 3.0
    with pytest.raises(ConfigError, match="gate_clip >= 0"):
        ModelConfig(gate="statistics", gate_clip=-1.0)
    for wrong in ({"gate_clip": 3.0}, {"gate": "statistics", "gate_clip": 3.0, "feature_transform": "none"},
                  {"gate": "statistics", "gate_clip": float("inf")}):  # no gate, raw columns, no bound at all
        with pytest.raises(ConfigError, match="needs a gate .* and --feature-transform standardize"):
            ModelConfig(**wrong)


def test_the_pairwise_validity_observation_sees_only_junk_pairs_and_prefers_the_original():
    """``gate_pairwise``: ``valid_order ~ Bernoulli(sigma(t_a - t_b))`` observed 1 on the junk pairs only."""
    from pyro import poutine

    rm = build_reward_model(ModelConfig(model="bt", bt_head="bayesian_linear", gate="statistics", gate_pairwise=True),
                            emb_dim=E, response_dim=F, representation=REP, seed=0)
    data = _pairs(32, 6, junk_share=0.5)
    weight = torch.zeros(7)
    weight[0] = 1.0  # the validity column: junk lies below its original, so t_a - t_b > 0 on junk pairs
    conditioned = poutine.condition(rm.model, data={"gate_weight": weight, "gate_bias": torch.zeros(1),
                                                    "theta": torch.zeros(F)})
    trace = poutine.trace(conditioned).get_trace(*data.batch(slice(None)))
    trace.compute_log_prob()
    log_prob = trace.nodes["valid_order"]["log_prob"]
    junk = data.junk
    assert 0 < int(junk.sum()) < len(junk)
    assert bool((log_prob[~junk] == 0).all()) and bool((log_prob[junk] < 0).all())
    t = rm.model.gate.validity_logits({"gate_weight": weight, "gate_bias": torch.zeros(1)}, data.response_a) - \
        rm.model.gate.validity_logits({"gate_weight": weight, "gate_bias": torch.zeros(1)}, data.response_b)
    torch.testing.assert_close(log_prob[junk], torch.nn.functional.logsigmoid(t[junk]))
    assert "valid_order" not in poutine.trace(build_reward_model(
        ModelConfig(model="bt", bt_head="bayesian_linear", gate="statistics"), emb_dim=E, response_dim=F,
        representation=REP, seed=0).model).get_trace(*data.batch(slice(None))).nodes


def _task_pairs(n: int, seed: int) -> PairEmbeddings:
    """Two tasks, told apart by the prompt's first coordinate (±3): for task +1 ("rewrite this") a real answer copies
    the prompt, its validity column in [1, 3], and junk does not, [-3, -1]; for task -1 ("answer this") the other way
    round. Real pairs are labelled by quality (column 0); a third of the pairs are a real answer against junk."""
    g = torch.Generator().manual_seed(seed)
    task = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
    prompt = torch.randn(n, E, generator=g)
    prompt[:, 0] = 3.0 * task
    a, b = torch.randn(n, F, generator=g), torch.randn(n, F, generator=g)
    a[:, VALID], b[:, VALID] = task * (1 + 2 * torch.rand(n, generator=g)), task * (1 + 2 * torch.rand(n, generator=g))
    label = torch.bernoulli(torch.sigmoid(3.0 * (a[:, 0] - b[:, 0])), generator=g)
    junk = torch.rand(n, generator=g) < 1 / 3
    b[junk, VALID] = -task[junk] * (1 + 2 * torch.rand(int(junk.sum()), generator=g))
    label[junk] = 1.0
    return PairEmbeddings(prompt, a, b, label, junk=junk)


@pytest.mark.parametrize("model", ["vrm", "bt"])
def test_a_gate_by_prompt_learns_what_is_valid_for_each_task(model, tmp_path):
    """When the validity column means opposite things for two tasks, a gate with one weight per column can only
    reject one task's real answers or let the other's junk through; ``gate_by_prompt`` (``v(x) = v + V^T x̂``) keeps
    real answers of both tasks near ``log σ = 0`` and sinks the junk of both, and a checkpoint scores the same."""
    from vrm_pyro.checkpoint import load_checkpoint, save_checkpoint

    train, val, test = _task_pairs(900, 11), _task_pairs(150, 12), _task_pairs(300, 13)
    junk = test.junk
    terms = {}
    for by_prompt in (False, True):
        cfg = ModelConfig(model=model, bt_head="bayesian_linear", hidden_dim=16, num_objectives=2, feature_dim=2,
                          gate="statistics", gate_by_prompt=by_prompt)
        rm = build_reward_model(cfg, emb_dim=E, response_dim=F, representation=REP, seed=0)
        fit(rm, train, val, TrainConfig(epochs=25, lr=2e-2, patience=25, progress=False, gate_lr=0.2))
        with torch.no_grad():
            real = rm.model.gate_moments(rm.guide, test.prompt, rm.transform.features(test.response_a), 32, 0)[0]
            bad = rm.model.gate_moments(rm.guide, test.prompt[junk], rm.transform.features(test.response_b[junk]),
                                        32, 0)[0]
        terms[by_prompt] = (float((real < -1).float().mean()), float((bad > -1).float().mean()))
    (plain_rejects, plain_passes), (task_rejects, task_passes) = terms[False], terms[True]
    assert plain_rejects + plain_passes > 0.3, terms  # one weight per column cannot serve both tasks
    assert task_rejects < 0.05 and task_passes < 0.2 and task_passes < (plain_rejects + plain_passes) / 4, terms
    assert "gate_prompt" in rm.model.global_sites()
    loaded = load_checkpoint(save_checkpoint(tmp_path / "gate", rm, encoder=EncoderConfig(name="tiny", representation=REP)))
    torch.testing.assert_close(loaded.reward_model.reward(test.prompt, test.response_b).reward,
                               rm.reward(test.prompt, test.response_b).reward)


def test_gate_lr_covers_every_site_of_the_gate():
    """``gate_lr`` gives every global site of the gate its own AdamW group, the prompt-dependent ``gate_prompt``
    included (the site sets are read off the modules, as for ``nuisance_lr``); nothing else moves at that rate."""
    from vrm_pyro.train import Trainer

    data = _pairs(64, 7)
    cfg = ModelConfig(model="bt", bt_head="bayesian_linear", gate="statistics", gate_by_prompt=True)
    rm = build_reward_model(cfg, emb_dim=E, response_dim=F, representation=REP, seed=0)
    trainer = Trainer(rm, data, None, TrainConfig(epochs=1, lr=1e-3, gate_lr=0.1, progress=False))
    groups = {g["lr"]: {id(p) for p in g["params"]} for g in trainer.optim.param_groups}
    names = {id(p): n.rsplit(".", 1)[-1] for n, p in rm.named_parameters()}
    assert sorted(names[i] for i in groups[0.1]) == sorted(2 * ["gate_bias", "gate_prompt", "gate_weight"])
    assert "gate_prompt" not in {names[i] for i in groups[1e-3]}


REL, FORM = VALID, VALID + 1  # two statistics: "about the prompt" and "well formed"


def _requirement_pairs(n: int, seed: int, junk_share: float = 0.4) -> PairEmbeddings:
    """Real answers meet both requirements (REL and FORM in [1, 3]); junk fails one of them (in [-3, -1]) and meets
    the other as real answers do. Labels among real pairs follow column 0."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randn(n, E, generator=g)
    a, b = torch.randn(n, F, generator=g), torch.randn(n, F, generator=g)
    for x in (a, b):
        x[:, [REL, FORM]] = 1 + 2 * torch.rand(n, 2, generator=g)
    label = torch.bernoulli(torch.sigmoid(3.0 * (a[:, 0] - b[:, 0])), generator=g)
    junk = torch.rand(n, generator=g) < junk_share
    failed = torch.where(torch.rand(n, generator=g) < 0.5, REL, FORM)[junk]
    b[junk.nonzero()[:, 0], failed] = -1 - 2 * torch.rand(int(junk.sum()), generator=g)
    label[junk] = 1.0
    return PairEmbeddings(prompt, a, b, label, junk=junk)


def test_a_conjunctive_gate_computes_the_product_of_its_factors():
    """``a;b`` in ``ModelConfig.gate``: ``P(valid) = sigma(t_1) sigma(t_2)``, entered as its logit, for one draw of the
    sites, a stack of them and vectorised particles; factors whose columns interleave in ``h``; saturated factors give
    a large finite logit; a column in two factors is an error that names it."""
    names = ("distinct_words", "compression_ratio", "prompt_echo")
    cfg = ModelConfig(model="bt", bt_head="bayesian_linear", gate=f"{names[1]},cosine;{names[0]},{names[2]}")
    assert cfg.gate_factors == [[names[1], "cosine"], [names[0], names[2]]]
    assert cfg.gate_parts == [names[1], "cosine", names[0], names[2]]
    gate = build_reward_model(cfg, emb_dim=E, response_dim=F, representation=REP, seed=0).model.gate
    assert gate.num_factors == 2 and gate.priors["gate_bias"][0] == (2,)
    # the columns in the representation's order: cosine, distinct_words, compression_ratio, prompt_echo
    assert gate.factors.tolist() == [0, 1, 0, 1]
    h = torch.randn(6, F)
    h_g = h[:, gate.columns]
    first, second = [0, 2], [1, 3]

    def by_hand(weight, bias):
        t = torch.stack([h_g[:, first] @ weight[first] + bias[0], h_g[:, second] @ weight[second] + bias[1]], -1)
        return t, torch.sigmoid(t).prod(-1)

    weight, bias = torch.tensor([0.5, -1.0, 2.0, 0.3]), torch.tensor([0.2, -0.4])
    sites = {"gate_weight": weight, "gate_bias": bias}
    factors, want = by_hand(weight, bias)
    t = gate.validity_logits(sites, h)
    torch.testing.assert_close(torch.sigmoid(t), want)
    torch.testing.assert_close(gate.term(t), want.log())  # the reward's term: log P(valid)
    torch.testing.assert_close(gate.factor_logits(sites, h), factors)  # which requirement fails: (B, K)
    other_weight, other_bias = torch.tensor([-0.7, 0.4, 1.1, -2.0]), torch.tensor([1.5, 0.1])
    draws = gate.validity_logits({"gate_weight": torch.stack([weight, other_weight]),
                                  "gate_bias": torch.stack([bias, other_bias])}, h)
    assert draws.shape == (2, 6)
    torch.testing.assert_close(draws[0], t)
    torch.testing.assert_close(torch.sigmoid(draws[1]), by_hand(other_weight, other_bias)[1])
    particles = gate.validity_logits({"gate_weight": torch.stack([weight, other_weight])[:, None],  # (P, 1, G)
                                      "gate_bias": torch.stack([bias, other_bias])[:, None]}, h)
    torch.testing.assert_close(particles, draws)
    for level in (60.0, 120.0):  # log sigma(120) is 0 in float32: 1 - P(valid) is kept off 0
        saturated = gate.validity_logits({"gate_weight": torch.zeros(4), "gate_bias": torch.full((2,), level)}, h)
        assert torch.isfinite(saturated).all() and float(saturated.min()) > 30
    with pytest.raises(ConfigError, match="column 'prompt_echo' sits in more than one factor.*factors 1 \\(statistics\\), 2"):
        build_reward_model(ModelConfig(gate="statistics;prompt_echo"), emb_dim=E, response_dim=F, representation=REP)
    with pytest.raises(ValueError, match="every factor at least one column"):
        type(gate)(gate.columns, factors=torch.tensor([0, 0, 2, 2]))


def test_a_conjunctive_gate_rejects_junk_that_one_logit_lets_buy_back_a_failed_requirement(tmp_path):
    """Trained on junk that fails one of two requirements, a single validity logit adds them up, so test junk that
    fails the first by as much as it exceeds the second (a scaffold: about nothing, many list items) scores like a
    real answer; with the requirements as factors (``REL;FORM``) it is rejected, real answers still saturate, and a
    checkpoint (with and without the encoder config, which names the factors) scores alike."""
    from vrm_pyro.checkpoint import load_checkpoint, save_checkpoint

    rel, form = (COHERENCE_STATISTICS[j - STATS.start] for j in (REL, FORM))
    train, val = _requirement_pairs(1200, 0), _requirement_pairs(200, 1)
    test = _requirement_pairs(400, 2, junk_share=0.0)
    test.response_b[:, REL] = -1 - 2 * torch.rand(400)  # fails relevance ...
    test.response_b[:, FORM] = 5 + 2 * torch.rand(400)  # ... and is "better formed" than any real answer
    cfg = ModelConfig(model="bt", bt_head="bayesian_linear", path_prior="part", path_prior_scale=2.0,
                      feature_transform="none")
    terms = {}
    for gate in (f"{rel},{form}", f"{rel};{form}"):
        rm = build_reward_model(cfg.replace(gate=gate), emb_dim=E, response_dim=F, representation=REP, seed=0)
        fit(rm, train, val, TrainConfig(epochs=25, lr=2e-2, patience=25, progress=False, gate_lr=0.2))
        with torch.no_grad():
            terms[gate] = [float(rm.model.gate_moments(rm.guide, test.prompt, rm.transform.features(r), 32, 0)[0].mean())
                           for r in (test.response_a, test.response_b)]
    (lin_real, lin_junk), (and_real, and_junk) = terms[f"{rel},{form}"], terms[f"{rel};{form}"]
    assert lin_junk > lin_real - 1.0, terms  # one logit: the excess form pays for the failed relevance
    assert and_real > -0.5 and and_junk < and_real - 3.0, terms
    for name, encoder in (("with", EncoderConfig(name="tiny", representation=REP)), ("without", None)):
        loaded = load_checkpoint(save_checkpoint(tmp_path / name, rm, encoder=encoder)).reward_model
        assert torch.equal(loaded.model.gate.factors, rm.model.gate.factors) and loaded.model.gate.num_factors == 2
        torch.testing.assert_close(loaded.reward(test.prompt, test.response_b).reward,
                                   rm.reward(test.prompt, test.response_b).reward)
