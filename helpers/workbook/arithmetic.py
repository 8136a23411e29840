"""Another machine's arithmetic, on this machine: what the portability tests perturb, and what a run used.

A chaotic training outcome differs from one CPU to another because the order of floating-point
sums differs. Three ways to get other arithmetic here (each is an environment variable, so it reaches
the kernel papermill starts):

    TF_ENABLE_ONEDNN_OPTS=1             TensorFlow's oneDNN kernels instead of its own (the workbook's
                                        default is 0); pinned to one core, TensorFlow also picks other
                                        thread counts (`taskset -c 0`, or `cpus=` in the tests)
    NPY_DISABLE_CPU_FEATURES=...        NumPy without its AVX-512 paths ("X86_V4 AVX512_ICL AVX512_SPR"
                                        on a CPU that has them): other bits from e.g. log1p
    WORKBOOK_NUDGE_ONE_WEIGHT=1         one initial weight of every seeded model moved by one ulp: the
                                        smallest change of a run there is, and it moves any chaotic
                                        result as much as another CPU does

    install_one_ulp_nudge()     what setup() calls when WORKBOOK_NUDGE_ONE_WEIGHT is set
    arithmetic()                the settings in effect, recorded by setup() as the finding `arithmetic`
    AVX512_OFF                  the NPY_DISABLE_CPU_FEATURES value above
"""
from __future__ import annotations

import os

NUDGE_ENV = "WORKBOOK_NUDGE_ONE_WEIGHT"
AVX512_OFF = "X86_V4 AVX512_ICL AVX512_SPR"

_installed = False
_armed = False


def _nudged(variable) -> None:
    """Move element 0 of `variable` up by one ulp (its own dtype's)."""
    import numpy as np
    value = np.array(variable.numpy())
    flat = value.reshape(-1)
    flat[0] = np.nextafter(flat[0], np.inf, dtype=flat.dtype)
    variable.assign(value)


def install_one_ulp_nudge() -> None:
    """After every keras.utils.set_random_seed, the first trainable floating-point kernel created
    (the first layer's weights of the model built next) gets one ulp added to its first element.

    Every model of the workbook is built right after seeding, so each gets exactly one nudged weight."""
    global _installed
    if _installed:
        return
    import keras
    import numpy as np
    from keras.src.layers.layer import Layer
    from keras.src.utils import rng_utils

    seed_fn = rng_utils.set_random_seed
    add_weight = Layer.add_weight

    def set_random_seed(seed):
        global _armed
        seed_fn(seed)
        _armed = True

    def add_weight_nudged(self, *args, **kwargs):
        global _armed
        variable = add_weight(self, *args, **kwargs)
        if (_armed and variable.trainable and "float" in str(variable.dtype)
                and "kernel" in variable.path.rsplit("/", 1)[-1] and int(np.prod(variable.shape)) > 0):
            _nudged(variable)
            _armed = False
        return variable

    rng_utils.set_random_seed = set_random_seed
    keras.utils.set_random_seed = set_random_seed
    Layer.add_weight = add_weight_nudged
    _installed = True


def cpus_allowed() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def arithmetic() -> dict:
    """The settings that decide this process's floating-point arithmetic."""
    return {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
            "cpus_allowed": cpus_allowed(),
            "NPY_DISABLE_CPU_FEATURES": os.environ.get("NPY_DISABLE_CPU_FEATURES", ""),
            "one_ulp_nudge": bool(os.environ.get(NUDGE_ENV))}


# ---------------------------------------------------------------------------------------------------------
# `python -m helpers.workbook.arithmetic [NOTEBOOK ...]`: the deterministic comparisons under other arithmetic

CONFIGS = {  # name: (environment variables, pin to the first allowed core)
    "default": ({}, False),
    "one core": ({}, True),
    "oneDNN on": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, False),
    "one core, oneDNN on": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, True),
}

# findings that compare two computations that should agree to rounding, with the tolerance of their check
DETERMINISTIC = {
    "01_steps_epochs_and_batches": {"accumulated_vs_full_gradient_max_abs_diff": "1e-6 × max(1, |g|)",
                                    "compiled_loop_vs_fit_max_abs_diff": "1e-5"},
    "02_batchnorm_small_batches": {"max_abs_diff_numpy_vs_keras": "1e-5"},
    "03_batchnorm_train_vs_inference": {
        "max_abs_diff_batch1_vs_batch256_inference": "1e-5", "max_abs_diff_predict_vs_call_inference": "1e-5",
        "conv_bn_batch1_vs_instance_norm_max_abs_diff": "1e-4", "max_abs_diff_fold_by_hand": "1e-4 × max(1, |out|)",
        "max_abs_diff_folded_vs_original": "1e-4", "max_abs_diff_stream_vs_batch": "1e-5",
        "max_abs_diff_export_vs_inference": "1e-5", "frozen_bn_training_true_vs_inference_max_abs_diff": "1e-5",
        "subclassed_propagated_batch_diff": "1e-5"},
    "04_batchnorm_running_statistics": {"ema_update_max_abs_diff": "1e-5",
                                        "precise_bn_helper_vs_page_max_rel_diff": "1e-4 (relative)"},
    "05_multi_device_gradient_averaging": {
        "max_abs_diff_2x_b_vs_1x_2b": "1e-5", "max_abs_diff_4x_vs_2x": "1e-5", "max_abs_diff_custom_loop_vs_fit": "1e-6",
        "max_abs_diff_sum_vs_scaled_mean": "1e-5", "max_abs_diff_syncbn_vs_single": "1e-4",
        "max_abs_diff_multiworker_vs_single": "1e-5", "max_abs_diff_multiworker_vs_logical": "1e-5"},
    "06_imbalanced_timestep_labels": {"keras_reduction_vs_arithmetic_max_rel_error": "1e-3 (relative)",
                                      "lesson_step_vs_helper_max_rel_diff": "1e-3 (relative)",
                                      "running_mean_recovery_max_rel_error": "1e-3 (relative)"},
    "07_diagnose_your_model": {"batch1_max_abs_diff": "1e-4"},
}


def _main(argv=None) -> int:
    """Run notebooks under each of CONFIGS into build/arithmetic/<config>/ and print, for every finding in
    DETERMINISTIC, its value per configuration, the worst and the check's tolerance (a Markdown table)."""
    import argparse
    from pathlib import Path

    from .findings import build_dir
    from .notebooks import environ, execute, notebook_path
    parser = argparse.ArgumentParser(prog="python -m helpers.workbook.arithmetic", description=_main.__doc__)
    parser.add_argument("notebooks", nargs="*", default=list(DETERMINISTIC), help="notebook stems (default: all above)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.notebooks if s not in DETERMINISTIC]
    if unknown:
        parser.error(f"no deterministic findings listed for {unknown}; choose from {sorted(DETERMINISTIC)}")
    root, values = Path(build_dir()) / "arithmetic", {}
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    for config, (env, one_core) in CONFIGS.items():
        folder = root / config.replace(", ", "-").replace(" ", "_")
        try:
            if one_core and before:
                os.sched_setaffinity(0, {min(before)})
            with environ(**env):
                for stem in args.notebooks:
                    result = execute(notebook_path(stem), folder / f"{stem}.ipynb", build_dir=folder)
                    print(f"{config}: {stem} {'ok' if result.ok else 'FAILED: ' + result.error} ({result.seconds:.0f} s)",
                          flush=True)
                    if result.ok:
                        import json
                        found = json.loads((folder / "findings" / f"{stem}.json").read_text())["findings"]
                        for name in DETERMINISTIC[stem]:
                            values.setdefault((stem, name), {})[config] = found.get(name)
        finally:
            if before:
                os.sched_setaffinity(0, before)
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
