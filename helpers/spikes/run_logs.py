"""The committed per-step logs of lesson 07 (data/spike_runs/), read and summarised.

    load_runs(folder)              {name: RunLog}: the arrays of each run and its metadata
    spikes_per_1k(loss, start)     spikes (the lesson's rule) per 1,000 steps counted from `start`
    state_rows(runs)               per seed: steps to the asker's state, steps held, median batch loss there
    variant_rows(runs)             per data variant and seed: spikes per 1,000 steps, biggest jump
    biggest_spike(log, start)      the largest jump over the running median, and who carried it
    remedy_rows(runs)              per remedy and seed: spikes, final PR-AUC, event recall, clip and skip rates
    scratch_rows(scratch)          the same per remedy and seed for the runs from the first step (from_scratch/)
    per_seed(rows, remedy, key)    {seed: value} of one remedy · wins_over_none(rows, remedy): seeds above no remedy
    by_size(sizes, moved_of)       the runs from the first step at several LSTM sizes, paired by remedy and seed
    at_step(log, step)             validation PR-AUC at an evaluated step; median batch loss and spikes before it
    judge(recomputed, live, ...)   a run trained now, judged as one more sample of the committed seeds
    judge_at_step(recomputed, ...) the same after a given step, on at_step's quantities
    size_table(sized)              the table of by_size: each quantity at every size, "16 → 64"
    variant_table, jump_table      lesson 07's tables of the data variants and of each run's biggest jump
    summarise(rows, key, fields)   mean, sd, min and max of fields over seeds, per key

Each run is one .npz written by `python -m helpers.spikes.asker_state`; names are
a_s{seed}, b_s{seed} (from the first step) and {source}_to_{variant}_{remedy}_s{seed}
(branches from the snapshot of run {source}_s{seed}); from_scratch/ holds scratch_b_{remedy}_s{seed}, every
remedy trained from the first step of variant b (`--from-scratch`), and from_scratch_lstm64/ the check of the
page's 16 units against 64 (`--from-scratch --units 64`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .asker_state import DATA, SPIKE_RULE, spike_mask
from .flags import running_median

NAME = re.compile(r"^(?:(?P<first>[ab])|(?P<source>[ab])_to_(?P<variant>[abcd])_(?P<remedy>.+))_s(?P<seed>\d+)$")


@dataclass
class RunLog:
    name: str
    arrays: dict
    meta: dict

    def __getitem__(self, key):
        return self.arrays[key]

    @property
    def steps(self) -> int:
        return len(self.arrays["loss"])


def load_runs(folder: str | Path) -> dict[str, RunLog]:
    """Every run's log in `folder` (data/spike_runs/), by name. Raises FileNotFoundError if there are none."""
    folder = Path(folder)
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no run logs in {folder}: regenerate them with python -m helpers.spikes.asker_state")
    out = {}
    for f in files:
        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
            meta = json.loads(str(z["meta"]))
        out[f.stem] = RunLog(f.stem, arrays, meta)
    return out


def parse_name(name: str) -> dict:
    m = NAME.match(name)
    if not m:
        raise ValueError(f"not a run name: {name!r}")
    d = m.groupdict()
    if d["first"]:
        return {"source": None, "variant": d["first"], "remedy": "none", "seed": int(d["seed"])}
    return {"source": d["source"], "variant": d["variant"], "remedy": d["remedy"], "seed": int(d["seed"])}


def spikes_per_1k(loss, start: int = 0, history=()) -> float:
    """Steps flagged by the lesson's rule from `start` on (the reference may look back before it), per 1,000
    steps. `history`: the losses before the log's first step (a branch continues its source run's)."""
    mask = spike_mask(np.r_[np.asarray(history, np.float64), np.asarray(loss, np.float64)])[len(history) + start:]
    return 1000.0 * float(mask.sum()) / max(1, len(mask))


def history_of(runs: dict, name: str) -> np.ndarray:
    """The 50 batch losses of a branch's source run just before the branch started (empty for a first run)."""
    p, log = parse_name(name), runs[name]
    if p["source"] is None:
        return np.zeros(0)
    start = int(log.meta["from_step"])
    return np.asarray(runs[f"{p['source']}_s{p['seed']}"]["loss"][max(0, start - SPIKE_RULE["window"]):start], np.float64)


def biggest_spike(log: RunLog, start: int = 0, moved=None, history=()) -> dict:
    """The step from `start` on with the largest loss over the median of the previous 50, with what the
    log says about it: positives, lowest p on a positive, gradient norm, the series carrying the most loss
    (and its share of the batch's loss, and whether its labels are off their signal when `moved` is given),
    and the steps until the median of the next 10 losses is back within 2 × the reference (None: not within
    the log). `history`: the source run's losses before a branch, so a branch's first step has a reference."""
    h = len(history)
    loss = np.r_[np.asarray(history, np.float64), np.asarray(log["loss"], np.float64)]
    ref = running_median(loss, SPIKE_RULE["window"])
    ratio = np.where(ref > 0, loss / np.where(ref > 0, ref, 1.0), 0.0)
    ratio[:max(h + start, 3)] = 0.0
    k = int(np.nanargmax(ratio))
    recovery = None
    for j in range(k + 1, len(loss) - 9):
        if np.median(loss[j:j + 10]) <= 2 * ref[k]:
            recovery = j - k
            break
    i = k - h                                              # the step in the log
    series = int(log["max_series"][i])
    out = {"step": i, "loss": float(loss[k]), "reference": float(ref[k]), "ratio": float(ratio[k]),
           "positives": int(log["positives"][i]), "min_p_positive": float(log["min_p_positive"][i]),
           "grad_norm": float(log["grad_norm"][i]), "series": series,
           "update_over_lr": float(log["max_update_over_lr"][i]) if "max_update_over_lr" in log.arrays else None,
           "series_loss": float(log["max_series_loss"][i]),
           "series_share": float(log["max_series_loss"][i] / (DATA["batch"] * loss[k])),
           "recovery_steps": recovery}
    if moved is not None:
        out["series_moved"] = bool(moved[series])
    return out


def state_rows(runs: dict[str, RunLog]) -> list[dict]:
    """Per seed of the clean runs a_s*: the step where the median of 50 batch losses first reached the
    asker's 0.005, the steps trained after it, and the batch loss and spikes over those steps."""
    rows = []
    for name, log in sorted(runs.items()):
        p = parse_name(name)
        if p["source"] is not None or p["variant"] != "a":
            continue
        reached = log.meta.get("reached")
        loss = np.asarray(log["loss"], np.float64)
        after = loss[reached:] if reached is not None else loss[:0]
        rows.append({"seed": p["seed"], "reached_step": reached,
                     "steps_in_state": int(len(after)),
                     "median_batch_loss": float(np.median(after)) if len(after) else float("nan"),
                     "p99_batch_loss": float(np.percentile(after, 99)) if len(after) else float("nan"),
                     "max_batch_loss": float(after.max()) if len(after) else float("nan"),
                     "spikes_per_1k": spikes_per_1k(loss, reached) if reached is not None else float("nan"),
                     "final_pr_auc": log.meta["final_pr_auc"]})
    return rows


def variant_rows(runs: dict[str, RunLog], moved_of=None) -> list[dict]:
    """Per data variant and seed: spikes per 1,000 steps and the biggest jump. Variant a is counted over its
    state (after `reached`), b after its first 1,000 steps, the branches c and d (and the a → a control)
    over their 500 steps from the state's snapshot. `moved_of(variant, seed)` gives the moved-series mask."""
    rows = []
    for name, log in sorted(runs.items()):
        p = parse_name(name)
        if p["remedy"] != "none":
            continue
        if p["source"] is None:
            start = log.meta.get("reached") if p["variant"] == "a" else 1000
            if start is None:
                continue
            label = p["variant"] + (" (state, from the first step)" if p["variant"] == "a" else " (from the first step)")
        elif p["source"] == "a":
            start, label = 0, f"{p['variant']} (from the state's snapshot)"
        else:
            continue
        moved = moved_of(p["variant"], p["seed"]) if moved_of else None
        history = history_of(runs, name)
        big = biggest_spike(log, start, moved, history)
        loss = np.asarray(log["loss"], np.float64)
        rows.append({"variant": p["variant"], "run": label, "seed": p["seed"], "steps": int(len(loss) - start),
                     "median_batch_loss": float(np.median(loss[start:])),
                     "spikes_per_1k": spikes_per_1k(loss, start, history), "biggest_ratio": big["ratio"],
                     "biggest_loss": big["loss"], "biggest": big})
    return rows


def remedy_rows(runs: dict[str, RunLog]) -> list[dict]:
    """Per remedy and seed, for the branches from b's snapshot (500 steps each)."""
    rows = []
    for name, log in sorted(runs.items()):
        p = parse_name(name)
        if p["source"] != "b":
            continue
        rows.append({"remedy": p["remedy"], "seed": p["seed"],
                     "spikes_per_1k": spikes_per_1k(log["loss"], 0, history_of(runs, name)),
                     "log10_median_batch_loss": float(np.log10(np.median(log["loss"]))),
                     "pr_auc_gain": log.meta["final_pr_auc"] - float(log["val_pr_auc"][0]),
                     "final_pr_auc": log.meta["final_pr_auc"], "event_recall_1fa": log.meta["event_recall_1fa"],
                     "clipped_fraction": float(np.mean(log["clipped"])),
                     "skipped_fraction": float(np.mean(log["skipped"])),
                     "max_batch_loss": float(np.max(log["loss"])),
                     "monitor_loss_last": float(log["monitor_loss"][-1]),
                     "monitor_loss_max": float(np.max(log["monitor_loss"])),
                     "val_pr_auc": np.asarray(log["val_pr_auc"]), "eval_step": np.asarray(log["eval_step"]),
                     "seconds_per_step": log.meta["seconds_per_step"], "clip": log.meta.get("clip"),
                     "from_step": log.meta.get("from_step", 0)})
    return rows


SCRATCH_TARGET = 0.5     # validation PR-AUC whose first reaching counts as "steps to target" from the first step


def scratch_rows(scratch: dict[str, RunLog], target: float = SCRATCH_TARGET) -> list[dict]:
    """Per remedy and seed, for the runs from the first step of variant b (data/spike_runs/from_scratch/):
    the first evaluated step with validation PR-AUC ≥ target (None: not within the run), the PR-AUC and event
    recall after the last step, and spikes per 1,000 steps after step 1,000 (as variant b is counted)."""
    rows = []
    for name, log in sorted(scratch.items()):
        pr, at = np.asarray(log["val_pr_auc"], np.float64), np.asarray(log["eval_step"])
        hit = np.flatnonzero(pr >= target)
        loss = np.asarray(log["loss"], np.float64)
        rows.append({"remedy": log.meta["remedy"], "seed": int(log.meta["seed"]), "steps": int(len(loss)),
                     "steps_to_target": int(at[hit[0]]) if len(hit) else None,
                     "final_pr_auc": log.meta["final_pr_auc"], "event_recall_1fa": log.meta["event_recall_1fa"],
                     "spikes_per_1k": spikes_per_1k(loss, 1000),
                     "log10_median_batch_loss": float(np.log10(np.median(loss[1000:]))),
                     "clipped_fraction": float(np.mean(log["clipped"])),
                     "skipped_fraction": float(np.mean(log["skipped"])),
                     "val_pr_auc": pr, "eval_step": at,
                     "seconds_per_step": log.meta["seconds_per_step"], "clip": log.meta.get("clip")})
    return rows


def per_seed(rows: list[dict], remedy: str, key: str = "final_pr_auc") -> dict:
    """{seed: row[key]} over the rows of one remedy."""
    return {x["seed"]: x[key] for x in rows if x["remedy"] == remedy}


def wins_over_none(rows: list[dict], remedy: str) -> int:
    """Seeds on which `remedy` ends with a higher final PR-AUC than no remedy, paired on the same batches."""
    base = per_seed(rows, "none")
    return sum(v > base[k] for k, v in per_seed(rows, remedy).items())


def by_size(sizes: dict, moved_of) -> dict:
    """{(remedy, seed): {units: row}} for the pairs run at every size of `sizes` ({units: runs from the first step}),
    in the order of the last size's runs. Each row is scratch_rows' with the biggest jump after step 1,000 added
    (biggest_spike): jump_ratio, recovery_steps, jump_series_moved and jump_series_share. `moved_of(seed)`: the
    variant-b data's flags of series whose labels are off their signal."""
    rows = {u: {(x["remedy"], x["seed"]): x for x in scratch_rows(runs)} for u, runs in sizes.items()}
    out = {}
    for pair in rows[list(sizes)[-1]]:
        if all(pair in r for r in rows.values()):
            out[pair] = {}
            for u, runs in sizes.items():
                jump = biggest_spike(runs[f"scratch_b_{pair[0]}_s{pair[1]}"], 1000, moved_of(pair[1]))
                out[pair][u] = dict(rows[u][pair], jump_ratio=jump["ratio"], recovery_steps=jump["recovery_steps"],
                                    jump_series_moved=jump["series_moved"], jump_series_share=jump["series_share"])
    return out


def at_step(log, step: int) -> tuple[float, float, float]:
    """What a run is judged on after `step` steps, so a run recomputed for fewer steps than a committed one compares
    with the committed one at the same step: the validation PR-AUC evaluated there, and over the second half of the
    steps the log10 of the median batch loss and the spikes per 1,000 (at 2,000 steps: scratch_rows' quantities)."""
    at = [int(e) for e in np.asarray(log["eval_step"])]
    if step not in at or step > len(log["loss"]):
        raise ValueError(f"step {step} was not evaluated (evaluated: {at[:3]}...{at[-1:]}, {len(log['loss'])} steps)")
    loss = np.asarray(log["loss"], np.float64)[:step]
    return (float(np.asarray(log["val_pr_auc"])[at.index(step)]), float(np.log10(np.median(loss[step // 2:]))),
            spikes_per_1k(loss, step // 2))


def judge(recomputed, live: dict, committed: dict, seed: int, quantities: dict, label: str) -> bool:
    """Add to `recomputed` (helpers.workbook.spread.Recomputed) a run trained now, as one more sample of the committed
    seeds: live {key: value}, committed {seed: {key: value}}, quantities {key: (name, resolution)}. True if every
    quantity lies within the seeds' spread (the rule of helpers/workbook/spread.py)."""
    from ..workbook.spread import Spread
    return recomputed.add(label, [Spread(name, live[key], [c[key] for c in committed.values()], resolution=res,
                                         same_seed=committed[seed][key] if seed in committed else None)
                                  for key, (name, res) in quantities.items()],
                          title=f"{label}, trained now: one more sample of the {len(committed)} committed seeds")


def judge_at_step(recomputed, log, committed: dict, seed: int, steps: int, *, pr_resolution: float, label: str) -> bool:
    """judge() a run trained now after `steps` steps, on at_step's three quantities, against the committed runs
    {seed: log} at the same step."""
    keys = ("pr", "loss", "spikes")
    as_dict = lambda log_: dict(zip(keys, at_step(log_, steps)))   # noqa: E731
    return judge(recomputed, as_dict(log), {k: as_dict(c) for k, c in committed.items()}, seed, {
        "pr": (f"val PR-AUC at {steps:,}", pr_resolution), "loss": ("log10 of the median batch loss, second half", 0.0),
        "spikes": ("spikes / 1,000, second half", 2000.0 / steps)}, label)   # one spike in the second half, per 1,000


SIZE_COLUMNS = {"val PR-AUC at 2,000": ("final_pr_auc", "{:.3f}"), "steps to PR-AUC 0.5": ("steps_to_target", "{:,}"),
                "spikes / 1,000 after 1,000": ("spikes_per_1k", "{:.0f}"), "biggest jump after 1,000": ("jump_ratio", "{:.0f}×"),
                "steps to recover": ("recovery_steps", "{}"), "its top series: labels moved?": ("jump_series_moved", "{}"),
                "its share of the batch's loss": ("jump_series_share", "{:.0%}"), "clipped": ("clipped_fraction", "{:.1%}"),
                "s / step (regeneration)": ("seconds_per_step", "{:.3f}")}


def size_table(sized: dict):
    """by_size's rows as a table: one row per remedy and seed, each quantity at every size joined by " → "."""
    from ..workbook.tables import Table
    units = list(next(iter(sized.values())))
    cell = lambda v, f: "—" if v is None else f.format(v)   # noqa: E731
    return Table(["remedy, seed"] + [f"{c}: {' → '.join(map(str, units))} units" for c in SIZE_COLUMNS],
                 [[f"{r}, {k}"] + [" → ".join(cell(x[u][key], f) for u in units) for key, f in SIZE_COLUMNS.values()]
                  for (r, k), x in sized.items()])


def variant_table(variants: list[dict], by_variant: dict):
    """One row per run of variant_rows (summarised over seeds by `by_variant`): spikes, median loss, biggest jump."""
    from ..workbook.tables import Table
    return Table(["run", "seeds", "steps counted", "median batch loss", "spikes / 1,000 steps (per seed)",
                  "biggest jump × median", "biggest batch loss"],
                 [[k, s["spikes_per_1k"][4], next(v["steps"] for v in variants if v["run"] == k),
                   f"{s['median_batch_loss'][0]:.4f}", " / ".join(f"{v['spikes_per_1k']:.1f}" for v in variants if v["run"] == k),
                   f"{s['biggest_ratio'][3]:.0f}", f"{s['biggest_loss'][3]:.3f}"] for k, s in by_variant.items()])


def jump_table(variants: list[dict]):
    """One row per run and seed of variant_rows: its biggest jump (biggest_spike) and what the log says about it."""
    from ..workbook.tables import Table
    rows = []
    for r in variants:
        b = r["biggest"]
        rows.append([r["run"], r["seed"], b["step"], f"{b['reference']:.4f} → {b['loss']:.3f}", f"{b['ratio']:.0f}",
                     b["series"], "yes" if b.get("series_moved") else "no", f"{b['series_share']:.0%}",
                     f"{b['min_p_positive']:.2g}", f"{b['grad_norm']:.2f}", f"{b['update_over_lr']:.2f}", b["recovery_steps"]])
    return Table(["run", "seed", "step", "batch loss", "× median", "series carrying most", "its labels moved?",
                  "its share of the batch loss", "lowest p on a positive", "gradient norm", "largest update / lr",
                  "steps to recover"], rows)


def summarise(rows: list[dict], key: str, fields: tuple[str, ...]) -> dict:
    """{key value: {field: (mean, sd, min, max, n)}} over the rows (seeds) of each key value."""
    out: dict = {}
    for value in dict.fromkeys(r[key] for r in rows):
        group = [r for r in rows if r[key] == value]
        out[value] = {}
        for f in fields:
            v = np.array([r[f] for r in group], np.float64)
            out[value][f] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                             float(v.min()), float(v.max()), len(v))
    return out

