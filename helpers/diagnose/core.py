"""diagnose(): load, run the checks, turn the measurements into coded findings; Diagnosis: the result,
with the fix (a recalibrated copy, only when it helps) and the report writers."""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import bn as bn_check
from . import checks
from .codes import (APPLIED_TOLERANCE, CHECKS, MAX_BATCH_SIZE, UNTRAINED_FRACTION, CODES, GAP_THRESHOLD, IMPROVEMENT_SE, LESSONS, SCHEMA_VERSION,
                    SEVERITIES, THRESHOLDS)
from .inputs import DiagnoseError, Inputs, load_inputs, used_batch_size


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def finding(code: str, message: str, **numbers) -> dict:
    severity, _, lesson = CODES[code]
    notebook, section = LESSONS[lesson]
    return {"code": code, "severity": severity, "message": message,
            "lesson": {"notebook": notebook, "section": section}, **numbers}


def _f(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.4g}"


# ---------------------------------------------------------------- findings from the measurements


def untrained(inputs: Inputs, metric, out_stored, out_recomputed, seed: int) -> dict | None:
    """At chance: with stored and with recomputed BN statistics, the held-out metric covers less than
    UNTRAINED_FRACTION of the way from the best constant predictor to a perfect one (and is within noise of
    that), e.g. accuracy < chance + 0.1·(1 − chance)."""
    chance = metric.chance(inputs.train.metric_y, inputs.test.metric_y)
    perfect = metric.perfect()
    y = inputs.test.metric_y
    values, ses = [], []
    for out in [out_stored] + ([out_recomputed] if out_recomputed is not None else []):
        values.append(metric.value(out, y))
        ses.append(metric.standard_error(out, y, seed))
    g = metric.goodness
    line = g(chance) + UNTRAINED_FRACTION * (g(perfect) - g(chance))
    at_chance = all(g(v) <= max(line, g(chance) + IMPROVEMENT_SE * s) for v, s in zip(values, ses))
    return {"chance": chance, "values": values, "se": ses, "at_chance": bool(at_chance),
            "line": line if metric.higher_is_better else -line}


def bn_findings(bn: dict | None, metric, *, untrained_: bool, batch_size: int) -> list[dict]:
    if bn is None:
        return [finding("no_bn", "The model has no BatchNormalization layer: no moving statistics to check.")]
    out = []
    m = metric.short
    a, b = bn["metric_as_stored"], bn["metric_recomputed"]
    change = (f"{m} {_f(a)} → {_f(b)} ({'+' if bn['metric_change'] >= 0 else '−'}{abs(bn['metric_change']):.3f} "
              f"{'better' if bn['metric_change'] >= 0 else 'worse'}, paired standard error {bn['metric_change_se']:.3f})")
    if bn["frozen_layers"]:
        too = bn["recompute_frozen_too"]
        cost = "" if too is None else (
            f" Recomputing them as well would move the held-out {m} {_f(a)} → {_f(too['metric'])} "
            f"({too['change']:+.3f}, standard error {too['se']:.3f}).")
        out.append(finding("bn_frozen", f"{len(bn['frozen_layers'])} of {bn['layers_checked']} BN layers are not "
                           "trainable (frozen, as in transfer learning): they normalize with their stored statistics "
                           "even in fit, and the layers after them were trained that way, so diagnose keeps them and "
                           "never recomputes them." + cost, layers=bn["frozen_layers"], recompute_frozen_too=too))
    scale = bn["input_scale"]
    blocked = None
    if scale["mismatch"]:
        blocked = "input_scale"
        out.append(finding("input_scale", f"The data's scale does not match what BN layer {scale['layer']!r} saw in "
                           f"training: its stored statistics are off its input by {scale['error_as_given']:.2f} "
                           f"(median |ln divisor ratio| or mean shift) as given, and by {scale['errors'][scale['best_rescaling']]:.2f} "
                           f"with {scale['best_rescaling']}. Feed the model data scaled as in training "
                           f"({scale['best_rescaling']}); do NOT recompute the statistics on this data: that would "
                           "break the model for correctly scaled input.", layer=scale["layer"],
                           rescaling=scale["best_rescaling"], errors=scale["errors"]))
    if untrained_:
        blocked = blocked or "model_untrained"
    bias = bn["small_batch_bias"]
    off = bn["off_layers"]
    if not off and not bn["trainable_layers"]:
        return out
    if not off:
        out.append(finding("bn_current", f"The stored statistics of every trainable BN layer match the training "
                           f"data's: 90 % of channels are within {bn['off_threshold']:.0%} in divisor and mean "
                           f"(worst layer by error: {max(bn['layers'], key=lambda r: r['error_p90'] if r['trainable'] else -1)['name']!r}); "
                           f"recomputing moves {change}."))
        return out
    where = (f"{len(off)} of {bn['layers_checked']} BN layers are off (90th percentile over channels of the error "
             f"in what the layer applies > {bn['off_threshold']:.0%}); the culprit is {bn['worst_layer']!r} "
             f"({bn['worst_layer_rule']}), the first off layer {bn['first_off_layer']!r}")
    if bias:
        name, b_ = next(iter(bias.items()))
        expected = "" if b_["ratio_expected"] is None else (f", as (m−1)/m = {b_['ratio_expected']:.2f} predicts for "
                                                            f"m = {b_['m_expected']} values per channel per batch of {batch_size}")
        out.append(finding("bn_small_batch_bias", f"Layer {name!r} stores {b_['ratio']:.2f} of the exact variance, "
                           f"with its means right: the signature of Keras's biased per-batch variance with m ≈ "
                           f"{b_['m_estimated']:.1f} values per channel{expected}. Training longer cannot fix it; "
                           "recomputing the statistics (precise BN) writes the population variance"
                           + (f": {change}." if bn["improves"] and not blocked else f"; here it moves {change}."),
                           layers=list(bias), ratio=b_["ratio"], m_estimated=b_["m_estimated"]))
    if blocked:
        return out
    if bn["improves"] and not bias:
        out.append(finding("bn_stale", f"Your BN statistics lag the weights: {where}. Recomputing them on x_train "
                           f"(precise BN, weights frozen) improves the held-out {change}. Recompute before you save "
                           "(--fix OUT.keras writes the recalibrated copy), or train with a lower BN momentum.",
                           worst_layer=bn["worst_layer"], off_layers=off))
    elif not bn["improves"]:
        direction = ("would make it WORSE" if bn["worsens"] else "does not improve it beyond its noise")
        out.append(finding("bn_mismatch_no_gain", f"{where}. But recomputing them on x_train {direction}: {change}. "
                           "Keep the stored statistics (if the training data differs from what the model will see, "
                           "that difference is the thing to look at).", worst_layer=bn["worst_layer"], off_layers=off))
    return out


def other_findings(report: dict, metric, *, untrained_: bool) -> list[dict]:
    out = []
    b1 = report.get("batch1")
    if b1 is not None:
        if not b1["match"]:
            out.append(finding("batch1_mismatch", f"Batch-1 inference does NOT match batched inference: outputs differ by "
                               f"up to {b1['max_abs_diff_vs_batched']:.3g} over {b1['examples']} test examples; something "
                               "in the model depends on its batch-mates in inference mode."))
        if b1["training_mode_constant_layers"]:
            out.append(finding("bn_constant_at_batch1", f"In training mode at batch 1, BN layer(s) "
                               f"{', '.join(b1['training_mode_constant_layers'])} output their β for every input (a batch "
                               "of one has zero variance): predictions made with training=True one sample at a time "
                               "ignore the input. Predict in inference mode.",
                               layers=b1["training_mode_constant_layers"]))
    g = report.get("gap")
    if g is not None:
        scale = 1.0 if metric.task != "regression" else max(report["data"]["chance_metric"], 1e-12)
        if abs(g["mode_mismatch"]) > GAP_THRESHOLD * scale and abs(g["mode_mismatch"]) > IMPROVEMENT_SE * g["mode_mismatch_se"]:
            out.append(finding("gap_mode_mismatch", f"On the training data, training mode (what fit reports, batch "
                               f"{g['batch_size']}) scores {_f(g['train_metric_training_mode'])} and inference mode "
                               f"{_f(g['train_metric_inference_mode'])} ({metric.short}): {g['mode_mismatch']:+.3f} of the "
                               "reported gap is the mode (BN batch statistics, dropout), not overfitting.",
                               mode_mismatch=g["mode_mismatch"]))
        if g["overfitting"] > GAP_THRESHOLD * scale and g["overfitting"] > IMPROVEMENT_SE * g["overfitting_se"]:
            out.append(finding("gap_overfitting", f"Train {_f(g['train_metric_inference_mode'])} vs held-out "
                               f"{_f(g['test_metric_inference_mode'])} ({metric.short}, both in inference mode): "
                               f"{g['overfitting']:+.3f} is real overfitting.", overfitting=g["overfitting"]))
    nz = report.get("noise")
    if nz is not None:
        if nz["b_simple"] is not None and nz["resolved"]:
            lo, hi = nz["interval"]
            out.append(finding("noise_scale", f"Gradient noise scale B_simple ≈ {nz['b_simple']:.0f} examples (90 % "
                               f"interval {lo:.0f}–{hi:.0f}, from |g|² at batch {nz['b_small']} and {nz['b_big']}, "
                               f"{nz['loss']}). Steps ≈ S_min·(1 + B_simple/B): up to B_simple each doubling of the batch "
                               f"still saves at least a quarter of the steps. Largest power of two ≤ B_simple (and ≤ the "
                               f"training set): {nz['suggested_max_batch']}. It grows as training proceeds.",
                               b_simple=nz["b_simple"], interval=nz["interval"]))
        else:
            if nz["b_simple"] is not None:
                lo, hi = nz["interval"]
                why = (f"the estimate {nz['b_simple']:.0f} has a 90 % interval {lo:.0f}–"
                       f"{'∞' if hi is None else f'{hi:.0f}'}, wider than a factor {2}: too uncertain to size a batch by")
            elif "reason" in nz:
                why = nz["reason"]
            elif nz.get("trace_sigma_positive") is False:
                why = ("the gradient noise tr(Σ) is not measurably above zero at these batch sizes (every batch "
                       "gives about the same gradient): B_simple is small, below the batch sizes measured")
            else:
                why = (f"the squared mean gradient |G|² is not resolved above zero from {nz['batches'][0]} batches "
                       f"of {nz['b_small']} and {nz['batches'][1]} of {nz['b_big']}: B_simple is larger than these batch "
                       "sizes can measure (more or larger batches, or another --seed, would narrow it)"
                       + ("; the model is at chance, so this is no sign of a minimum" if untrained_ else ""))
            out.append(finding("noise_unresolved", f"B_simple is not resolved: {why}.", b_simple=nz["b_simple"],
                               interval=nz.get("interval")))
    ts = report.get("timestep")
    if ts is not None:
        base = (f"{ts['positive_fraction']:.2%} of the training steps are positive; the weight that balances them is "
                f"neg/pos = {ts['balancing_positive_weight']:.1f}. Held-out PR-AUC {ts['pr_auc_test']:.3f} (a constant "
                f"predictor scores {ts['pr_auc_constant_predictor']:.3f}).")
        if ts["weights_given"] == "none":
            out.append(finding("timestep_no_weights", base + " No sample_weight_train was given: pass sample_weight of "
                               "shape (N, T) with targets (N, T, 1); Keras's class_weight weights whole series (or "
                               "refuses (N, T, 1) targets)."))
        elif ts["weights_constant_per_series"]:
            out.append(finding("timestep_class_weight_trap", base + f" The weights given are {ts['weights_given']} — "
                               "one weight per series, which is what class_weight makes of per-timestep labels: the "
                               f"positive steps carry {ts['positive_weight_share']:.1%} of the total weight instead of "
                               "about half. Pass per-step sample_weight (N, T).", share=ts["positive_weight_share"]))
        elif ts["balanced"]:
            out.append(finding("timestep_weights_ok", base + f" The per-step weights given put "
                               f"{ts['positive_weight_share']:.1%} of the total weight on the positive steps: balanced.",
                               share=ts["positive_weight_share"]))
        else:
            out.append(finding("timestep_weights_unbalanced", base + f" The per-step weights given put only "
                               f"{ts['positive_weight_share']:.1%} of the total weight on the positive steps (balanced: "
                               "about 50 %, with w = neg/pos).", share=ts["positive_weight_share"]))
    return out


def verdict(findings: list[dict]) -> str:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    serious = [f for f in findings if f["severity"] != "info"]
    if not serious:
        return "No problem found: " + "; ".join(f["code"] for f in findings) + "."
    serious.sort(key=lambda f: rank[f["severity"]])
    head = serious[0]["message"].split(": ")[0].split(". ")[0]
    return (f"{len(serious)} problem(s): " + ", ".join(f"{f['code']} ({f['severity']})" for f in serious)
            + f". First: {head}.")


# ---------------------------------------------------------------- the diagnosis


@dataclass
class Diagnosis:
    """What diagnose() returns. report: the report.json dict; figures: {name: PNG bytes}; inputs: the loaded
    model and data (BN state as loaded); codes: the finding codes."""
    report: dict
    inputs: Any = field(default=None, repr=False)
    figures: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict, repr=False)
    _precise: Any = field(default=None, repr=False)

    @property
    def codes(self) -> list[str]:
        return [f["code"] for f in self.report["findings"]]

    def finding(self, code: str) -> dict | None:
        return next((f for f in self.report["findings"] if f["code"] == code), None)

    @property
    def fix_reason(self) -> str:
        """Why a recalibrated copy would or would not be written."""
        bn = self.report.get("bn_statistics")
        if bn is None:
            return "the BN check did not run, or the model has no BatchNormalization layer"
        for code in ("input_scale", "model_untrained"):
            if code in self.codes:
                return f"{code}: {CODES[code][1]}; recomputing the statistics would not be a fix"
        if not bn["off_layers"]:
            return "every trainable BN layer's statistics match the training data's: there is nothing to recompute"
        if not bn["improves"]:
            return (f"recomputing does not improve the held-out {bn['metric_as_stored']:.4g} → "
                    f"{bn['metric_recomputed']:.4g} beyond {IMPROVEMENT_SE:g} standard errors "
                    f"({bn['metric_change']:+.4f} ± {bn['metric_change_se']:.4f})")
        return (f"recomputing improves the held-out metric {bn['metric_as_stored']:.4g} → {bn['metric_recomputed']:.4g} "
                f"({bn['metric_change']:+.4f}, {IMPROVEMENT_SE:g} standard errors = "
                f"{IMPROVEMENT_SE * bn['metric_change_se']:.4f})")

    @property
    def fix_allowed(self) -> bool:
        bn = self.report.get("bn_statistics")
        return bool(bn and bn["improves"] and bn["off_layers"]
                    and not {"input_scale", "model_untrained"} & set(self.codes) and self._precise is not None)

    def apply_fix(self) -> bool:
        """Assign the recomputed statistics (trainable BN layers) to the in-memory model, only when the rule
        allows (fix_allowed). Returns whether it did."""
        if not self.fix_allowed:
            return False
        from ..batchnorm import assign_moving_statistics
        assign_moving_statistics(self.inputs.model, self._precise)
        return True

    def fix(self, path) -> Path | None:
        """Write a recalibrated copy of the model to `path` (.keras) only when the rule allows; else write
        nothing and return None (fix_reason says why). The model in memory is left as it was."""
        path = Path(path)
        if path.suffix != ".keras":
            raise DiagnoseError(f"--fix {path}: the copy is written as a .keras file; name it *.keras")
        if not self.fix_allowed:
            return None
        from ..batchnorm import preserved_bn_state
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".keras", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            with preserved_bn_state(self.inputs.model):
                self.apply_fix()
                self.inputs.model.save(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    @property
    def markdown(self) -> str:
        from .report import render_markdown
        return render_markdown(self)

    @property
    def html(self) -> str:
        from .report import render_html
        return render_html(self)

    def _repr_html_(self) -> str:
        return self.html

    def write(self, out_dir) -> Path:
        from .report import write_report
        return write_report(self, out_dir)


def diagnose(model, data, *, batch_size: int = 32, only=None, seed: int = 0, max_examples: int | None = None,
             task: str = "auto", imports=(), unsafe: bool = False, progress: bool = True,
             plots: bool = True) -> Diagnosis:
    """Run the checks on a model (a .keras/.h5 path or a keras.Model) and data (an .npz path, a dict of
    x_train, y_train, x_test, y_test [, sample_weight_train], that tuple, or {'train': ds, 'test': ds} with
    tf.data datasets of (x, y[, w])). Raises DiagnoseError on bad input, before any check runs. Nothing is
    written; BN statistics changed in memory are put back."""
    from tqdm.auto import tqdm
    only = tuple(CHECKS if only is None else only)
    unknown = [c for c in only if c not in CHECKS]
    if unknown:
        raise DiagnoseError(f"only: unknown check(s) {', '.join(unknown)}; allowed: {', '.join(CHECKS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 2:
        raise DiagnoseError(f"batch size {batch_size!r}: expected an integer ≥ 2")
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer))
                                     or max_examples < 2):
        raise DiagnoseError(f"max examples {max_examples!r}: expected an integer ≥ 2")
    inputs = load_inputs(model, data, task=task, imports=imports, unsafe=unsafe, max_examples=max_examples, seed=seed)
    from ..batchnorm import bn_layers
    from .metrics import Metric, forward, looks_like_logits
    m = inputs.model
    first_outputs = forward(m, inputs.x_train[:64])
    logits = looks_like_logits(first_outputs, inputs.task)
    metric = Metric(inputs.task, logits)
    b_used = used_batch_size(int(batch_size), len(inputs.x_train))
    layers = bn_layers(m)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "verdict": "",
        "model": {"source": inputs.model_label, "parameters": int(m.count_params()), "bn_layers": len(layers),
                  "frozen_bn_layers": sum(not l.trainable for l in layers), "outputs_are_logits": logits},
        "data": {"source": inputs.data_label, "task": inputs.task, "label_form": inputs.train.form,
                 "metric": metric.name, "higher_is_better": metric.higher_is_better,
                 "n_train": len(inputs.x_train), "n_test": len(inputs.x_test),
                 "n_train_given": inputs.n_train_given, "n_test_given": inputs.n_test_given,
                 "x_dtype": inputs.x_dtype, "x_range": list(inputs.x_range),
                 "batch_size": b_used, "batch_size_requested": int(batch_size),
                 "chance_metric": metric.chance(inputs.train.metric_y, inputs.test.metric_y)},
        "checks_run": list(only), "thresholds": dict(THRESHOLDS), "findings": [],
        "bn_statistics": None, "batch1": None, "gap": None, "noise": None, "timestep": None,
    }
    details: dict[str, Any] = {}
    steps = len(only) + ("noise" in only) * (checks.SMALL_BATCHES + checks.BIG_BATCHES)
    precise = None
    with tqdm(total=steps, desc="diagnose", unit="step", disable=not progress, file=sys.stderr) as bar:
        def tick(name=None):
            if name:
                bar.set_postfix_str(name, refresh=False)
            bar.update(1)
        out_stored = forward(m, inputs.x_test)
        bn = None
        if "bn" in only:
            bn = bn_check.analyse(inputs, metric, batch_size=b_used, seed=seed)
            if bn is not None:
                precise = bn.pop("_precise")
                details["bn_outputs"] = (bn.pop("_out_stored"), bn.pop("_out_recomputed"))
            tick("bn")
        # with trainable BN layers, "at chance" means something only with recomputed statistics as well
        # (stale statistics alone put a trained model at chance): without the BN check, no verdict
        judged = "bn" in only or not any(l.trainable for l in layers)
        state = untrained(inputs, metric, out_stored, details.get("bn_outputs", (None, None))[1], seed)
        state["at_chance"] = bool(judged and state["at_chance"])
        if state["at_chance"]:
            report["findings"].append(finding(
                "model_untrained", f"The held-out {metric.short} is at chance: {', '.join(_f(v) for v in state['values'])} "
                f"(stored{' / recomputed' if len(state['values']) > 1 else ''} BN statistics) against "
                f"{_f(state['chance'])} for the best constant prediction: less than {UNTRAINED_FRACTION:.0%} of the way "
                f"to a perfect score ({_f(state['line'])}). Train the model first; no other advice applies to it.",
                chance=state["chance"]))
        if "bn" in only:
            report["bn_statistics"] = bn
            report["findings"] += bn_findings(bn, metric, untrained_=state["at_chance"], batch_size=b_used)
        if "batch1" in only:
            report["batch1"] = checks.batch1(inputs)
            tick("batch1")
        if "gap" in only:
            report["gap"] = checks.gap(inputs, metric, b_used, out_stored, seed)
            tick("gap")
        if "noise" in only:
            report["noise"], details["noise"] = checks.noise(inputs, b_used, seed, logits, progress=tick)
            tick("noise")
        if "timestep" in only:
            report["timestep"] = checks.timestep(inputs, metric, out_stored)
            tick("timestep")
    report["findings"] += other_findings(report, metric, untrained_=state["at_chance"])
    if b_used != batch_size or (max_examples and (inputs.n_train_given > len(inputs.x_train)
                                                  or inputs.n_test_given > len(inputs.x_test))):
        parts = []
        if b_used != batch_size:
            parts.append(f"batch size {batch_size} was capped to {b_used} (at most the {len(inputs.x_train)} training "
                         f"examples and at most {MAX_BATCH_SIZE})")
        if max_examples and (inputs.n_train_given > len(inputs.x_train) or inputs.n_test_given > len(inputs.x_test)):
            parts.append(f"a random {len(inputs.x_train)} of {inputs.n_train_given} training and {len(inputs.x_test)} "
                         f"of {inputs.n_test_given} held-out examples were used (max examples {max_examples}, seed {seed})")
        text = "; ".join(parts)
        report["findings"].append(finding("examples_capped", text[0].upper() + text[1:] + "."))
    report["verdict"] = verdict(report["findings"])
    diag = Diagnosis(report=report, inputs=inputs, details=details, _precise=precise)
    if plots:
        from .report import make_figures
        diag.figures = make_figures(diag)
    return diag
