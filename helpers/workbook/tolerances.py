"""The deterministic comparisons of every lesson under other arithmetic, with their checks' tolerances.

    python -m helpers.workbook.tolerances [NOTEBOOK ...]

A deterministic comparison (NumPy against Keras, a closed form, two paths to the same step) keeps a tight
tolerance, unlike a training outcome (helpers.workbook.spread). Each tolerance is justified by the worst
case measured across thread settings and oneDNN on/off: this command runs the notebooks under each of
CONFIGS (into <build>/arithmetic/) and prints, for every finding in DETERMINISTIC, its value per
configuration, the worst and the check's tolerance, as the Markdown table in the README ("Tolerances").
"""
from __future__ import annotations

import json
import os
from pathlib import Path

CONFIGS = {  # name: (environment variables, pin to the first allowed core)
    "default": ({}, False),
    "one core": ({}, True),
    "oneDNN on": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, False),
    "one core, oneDNN on": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, True),
}

# findings that compare two computations that should agree to rounding, with the tolerance of their check
DETERMINISTIC = {
    "01_steps_epochs_and_batches": {"accumulated_vs_full_gradient_max_abs_diff": "1e-6 × max(1, ‖g‖)",
                                    "keras_gradient_accumulation_max_abs_diff": "1e-3 × the step",
                                    "compiled_loop_vs_fit_max_abs_diff": "1e-5"},
    "02_batchnorm_small_batches": {"max_abs_diff_numpy_vs_keras": "1e-5"},
    "03_batchnorm_train_vs_inference": {
        "max_abs_diff_batch1_vs_batch256_inference": "1e-5", "max_abs_diff_predict_vs_call_inference": "1e-5",
        "conv_bn_batch1_vs_instance_norm_max_abs_diff": "1e-4", "max_abs_diff_fold_by_hand": "1e-4 × max(1, max ‖out‖)",
        "max_abs_diff_folded_vs_original": "1e-4", "max_abs_diff_stream_vs_batch": "1e-5",
        "max_abs_diff_export_vs_inference": "1e-5", "frozen_bn_training_true_vs_inference_max_abs_diff": "1e-5",
        "subclassed_propagated_batch_diff": "1e-5"},
    "04_batchnorm_running_statistics": {"ema_update_max_abs_diff": "1e-5",
                                        "precise_bn_helper_vs_page_max_rel_diff": "1e-4 (relative)"},
    "05_multi_device_gradient_averaging": {
        "max_abs_diff_2x_b_vs_1x_2b": "1e-5", "max_abs_diff_4x_vs_2x": "1e-5", "max_abs_diff_custom_loop_vs_fit": "1e-5",
        "max_abs_diff_sum_vs_scaled_mean": "1e-5", "max_abs_diff_syncbn_vs_single": "1e-4",
        "max_abs_diff_multiworker_vs_single": "1e-5", "max_abs_diff_multiworker_vs_logical": "1e-5"},
    "06_imbalanced_timestep_labels": {"keras_reduction_vs_arithmetic_max_rel_error": "1e-3 (relative)",
                                      "keras_mean_with_sample_weight_vs_arithmetic_max_rel_error": "1e-3 (relative)",
                                      "logits_gradient_max_rel_error": "1e-4 (relative)",
                                      "running_mean_recovery_max_rel_error": "1e-3 (relative)"},
    "08_diagnose_your_model": {"batch1_max_abs_diff": "1e-4"},
}


def _main(argv=None) -> int:
    """Run notebooks under each of CONFIGS into build/arithmetic/<config>/ and print, for every finding in
    DETERMINISTIC, its value per configuration, the worst and the check's tolerance (a Markdown table)."""
    import argparse

    from .arithmetic import pinned
    from .findings import build_dir
    from .notebooks import environ, execute, notebook_path
    parser = argparse.ArgumentParser(prog="python -m helpers.workbook.tolerances", description=_main.__doc__)
    parser.add_argument("notebooks", nargs="*", default=list(DETERMINISTIC), help="notebook stems (default: all above)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.notebooks if s not in DETERMINISTIC]
    if unknown:
        parser.error(f"no deterministic findings listed for {unknown}; choose from {sorted(DETERMINISTIC)}")
    root, values = Path(build_dir()) / "arithmetic", {}
    first = [min(os.sched_getaffinity(0))] if hasattr(os, "sched_getaffinity") else None
    for config, (env, one_core) in CONFIGS.items():
        folder = root / config.replace(", ", "-").replace(" ", "_")
        with pinned(first if one_core else None), environ(**env):
            for stem in args.notebooks:
                result = execute(notebook_path(stem), folder / f"{stem}.ipynb", build_dir=folder)
                print(f"{config}: {stem} {'ok' if result.ok else 'FAILED: ' + result.error} ({result.seconds:.0f} s)",
                      flush=True)
                if result.ok:
                    found = json.loads((folder / "findings" / f"{stem}.json").read_text())["findings"]
                    for name in DETERMINISTIC[stem]:
                        values.setdefault((stem, name), {})[config] = found.get(name)
    print("| notebook | finding | tolerance | " + " | ".join(CONFIGS) + " | worst |")
    print("|---|---|---|" + "---|" * (len(CONFIGS) + 1))
    for (stem, name), per in values.items():
        got = [per.get(c) for c in CONFIGS]
        worst = max((abs(v) for v in got if v is not None), default=None)
        cells = ["—" if v is None else f"{v:.1e}" for v in got]
        print(f"| {stem[:2]} | `{name}` | {DETERMINISTIC[stem][name]} | " + " | ".join(cells)
              + f" | {'—' if worst is None else f'{worst:.1e}'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
