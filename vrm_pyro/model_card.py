"""The model card written into every checkpoint (``README.md``, Hugging Face model-card conventions)."""

from __future__ import annotations

import json

from vrm_pyro.reward_model import gamma_cells


def _augmentation(spec: str, rate) -> str:
    """``"rrm,content_free:0.1"`` at 0.6 -> ``"rrm at rate 0.6; content_free at rate 0.1"``: one entry per group."""
    from vrm_pyro.hacking import augment_groups

    items = [i.strip() for i in spec.split(",") if i.strip()]
    shared = ",".join(i for i in items if ":" not in i)
    own = [g for g in augment_groups(spec, rate or 0.0) if g.stream != "augment"]
    return "; ".join(([f"{shared} at rate {rate}"] if shared else [])
                     + [f"{','.join(g.kinds)} at rate {g.rate}" for g in own])


def _table(rows: dict) -> str:
    lines = ["| | |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


def model_card(rm, config: dict) -> str:
    """Markdown with YAML front matter: what the model is, its data, encoder, configuration, held-out
    metrics, the judge's nuisance coefficients, intended use and limits, and how to load it."""
    meta = config.get("metadata") or {}
    encoder = config.get("encoder") or {}
    data = meta.get("data") or {}
    kind = "Variational Reward Model (VRM)" if rm.kind == "vrm" else "Bradley–Terry reward model (baseline)"
    front = ["---", "library_name: vrm-pyro", "tags:", "- reward-model", "- rlhf", "- pyro",
             f"- {rm.kind}", "---", ""]
    md = front + [f"# {kind}", "",
                  "A reward model trained with [vrm-pyro](https://github.com/vrm-pyro/vrm-pyro): it scores a "
                  "response to a prompt. " + (
                      "The reward is `w · u(z, y)`: per-prompt objective weights `w` on the simplex times decoded "
                      "scores of latent semantic features `z` and of a Bayesian path from the response features; "
                      "`reward_std` is its epistemic standard deviation (large far from the training data)."
                      if rm.kind == "vrm" else "The reward is a head on the response features."), ""]
    md += ["## Data", "", _table({"source": data.get("data") or "bundled HH-RLHF harmless slice",
                                  "format": data.get("format", "auto"),
                                  "split sizes": json.dumps(meta.get("split_sizes", {})),
                                  "augmentation": (f"{_augmentation(data['augment'], data.get('augment_rate'))}, from "
                                                   f"{data.get('augment_from', 'preferred')} answers"
                                                   + (f"; told valid to the gate: {data['augment_valid']}"
                                                      if data.get("augment_valid") else "")
                                                   if data.get("augment") else "none")}), ""]
    md += ["## Encoder", "", _table({"name": encoder.get("name"), "representation": encoder.get("representation"),
                                     "max length": encoder.get("max_length"),
                                     "mode": (f"LoRA (r={encoder.get('lora_r')}, alpha={encoder.get('lora_alpha')}; "
                                              "adapter weights in adapter.safetensors)"
                                              if encoder.get("mode") == "lora" else encoder.get("mode")),
                                     "identity": config.get("encoder_identity"),
                                     **({"likelihood model": meta["likelihood_identity"]}
                                        if meta.get("likelihood_identity") else {}),
                                     **({"sentence-order model": f"fitted on the training responses against their "
                                                                 f"reorderings ({config['order_model']}; features: "
                                                                 f"first words{' + ' + encoder['order_features'] if encoder.get('order_features') else ''}, "
                                                                 f"L2 {encoder.get('order_l2', 1e-3):g})"}
                                        if config.get("order_model") else {})}), ""]
    model = {k: v for k, v in (config.get("model") or {}).items()}
    md += ["## Configuration", "", _table(model), ""]
    metrics = meta.get("test_metrics") or {}
    if metrics:
        md += ["## Held-out metrics (test split of the training data)", "", _table(metrics), ""]
    nuisance = rm.nuisance_posterior()
    if nuisance:
        md += ["## The judge's nuisance coefficients", "",
               "Posterior mean ± sd of `gamma`: logits of the judge's preference per doubling of each covariate. "
               "`vrm score` returns the authentic reward, without this term (`--include-nuisance` adds it).", "",
               "| covariate | logits per doubling | sd |", "| --- | --- | --- |"]
        md += ["| {} | {} | {} |".format(g["covariate"], *gamma_cells(g)[:2]) for g in nuisance]
        md.append("")
    md += ["## Intended use and limits", "",
           "- Ranking and scoring responses for best-of-N selection, RLHF rewards (`vrm serve`, "
           "`vrm_pyro.integrations.trl.VRMReward`) and evaluation, in the domain and language of the training data.",
           "- The reward reflects the training labels' judge (people or an LLM) and its biases, except those modelled "
           "as nuisance terms; it is not a measure of truth or safety.",
           "- Responses unlike the training data get a larger `reward_std`; prefer `reward_lcb` when optimising "
           "against the reward.",
           "- The encoder truncates long texts (it keeps the start of the prompt and the end of the response).", "",
           "## Use", "", "```python",
           "from vrm_pyro.checkpoint import load_checkpoint",
           "from vrm_pyro.scoring import encoder_for, score_texts",
           "ckpt = load_checkpoint(\"PATH\")",
           "out = score_texts(ckpt, encoder_for(ckpt), [\"prompt\"], [\"response\"])",
           "```", "", "or `vrm score --checkpoint PATH --input rows.jsonl --output scored.jsonl`.", ""]
    return "\n".join(md)


__all__ = ["model_card"]
