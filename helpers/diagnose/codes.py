"""What the diagnosis can find: one code per cause, its severity, and the stated thresholds.

This module imports neither TensorFlow nor Keras, so the command line checks its arguments
(--fail-on codes among them) before the slow import.

A finding in report.json is {"code", "severity", "message", "lesson", ...numbers}. Severities:
  error    the model predicts worse than it could, or the set-up is wrong (act on it);
  warning  a known trap is present, or a number the user relies on is biased;
  info     a measurement, or a reason the diagnosis did NOT advise an action.
"""
from __future__ import annotations

SCHEMA_VERSION = 2

SEVERITIES = ("error", "warning", "info")

#: code -> (severity, what it means, the lesson key that teaches it; see LESSONS)
CODES: dict[str, tuple[str, str, str]] = {
    "bn_stale": ("error", "stored BN statistics lag the weights, and recomputing them improves the held-out "
                 "metric beyond its noise", "warmup"),
    "bn_small_batch_bias": ("warning", "the stored variance sits near (m-1)/m of the exact one: Keras keeps the "
                            "biased per-batch variance of m values per channel, which training longer cannot fix",
                            "precise"),
    "bn_frozen": ("info", "non-trainable BN layers are part of the model (inference mode even in fit): their "
                  "statistics are kept, never recomputed", "precise"),
    "bn_mismatch_no_gain": ("info", "some stored statistics differ from the training data's, but recomputing them "
                            "does not improve the held-out metric beyond its noise: keep them", "precise"),
    "bn_current": ("info", "stored BN statistics match the training data's", "precise"),
    "no_bn": ("info", "the model has no BatchNormalization layer", "precise"),
    "input_scale": ("error", "the data's scale is far from what the first BN layer saw in training (a standard "
                    "rescaling of x matches its stored statistics far better)", "warmup"),
    "model_untrained": ("error", "the held-out metric is at chance (less than a tenth of the way from the best "
                        "constant prediction to a perfect one), with stored and with recomputed BN statistics",
                        "gap"),
    "batch1_mismatch": ("error", "one sample at a time and batched inference disagree in inference mode",
                        "batch1"),
    "bn_constant_at_batch1": ("warning", "in training mode at batch 1 some BN layer outputs its beta whatever "
                              "the input", "streaming"),
    "gap_mode_mismatch": ("warning", "the training metric in training mode differs from the one in inference "
                          "mode beyond the threshold: part of the reported gap is not overfitting", "gap"),
    "gap_overfitting": ("info", "train and held-out metric differ beyond the threshold, both in inference mode",
                        "gap"),
    "noise_scale": ("info", "the gradient noise scale B_simple, with its interval", "noise"),
    "noise_unresolved": ("info", "B_simple could not be resolved at these batch sizes", "noise"),
    "timestep_class_weight_trap": ("error", "the weights given are one per series, what class_weight makes of "
                                   "per-timestep labels: they cannot up-weight the positive steps", "timestep"),
    "timestep_weights_unbalanced": ("warning", "per-step weights (N, T) are given but the positive steps carry "
                                    "far from half of the total weight", "timestep"),
    "timestep_weights_ok": ("info", "per-step weights (N, T) are given and balance the classes", "timestep"),
    "timestep_no_weights": ("info", "no sample_weight_train was given: the per-step weight that balances the "
                            "classes is reported", "timestep"),
    "examples_capped": ("info", "fewer examples or a smaller batch than asked were used", "gap"),
}

# ---- the stated thresholds (each is printed in the report next to the number it judges)
#: a BN layer is "off" when the 90th percentile over its channels of
#: max(scale error, mean shift) exceeds this. scale error = |ln(sqrt(var_stored+eps) / sqrt(var_exact+eps))|, about
#: the relative error of the divisor the layer applies; mean shift = |mean_stored - mean_exact| / sqrt(var_exact+eps),
#: in units of that divisor. eps keeps dead channels (variance ~0) from counting.
APPLIED_TOLERANCE = 0.10
#: the 90th percentile over channels (a robust summary: a few odd channels do not decide).
CHANNEL_QUANTILE = 0.90
#: recomputing "improves" the held-out metric when the paired change exceeds this many standard errors
#: and MIN_IMPROVEMENT (absolute for accuracy and PR-AUC; relative for a mean squared error).
IMPROVEMENT_SE = 2.0
MIN_IMPROVEMENT = 0.005
#: "at chance": with stored and with recomputed statistics the held-out metric covers less than this fraction
#: of the way from the best constant predictor to a perfect one (or is within IMPROVEMENT_SE of the constant).
UNTRAINED_FRACTION = 0.10
#: bootstrap resamples for standard errors and intervals.
BOOTSTRAP = 200
#: precise statistics come from one pass over a subsample of at most this many training examples, as many as
#: STATISTICS_BUDGET_BYTES of BN-layer inputs allow (all of x_train when it fits: then they are exact).
STATISTICS_SUBSAMPLE_MAX = 4096
STATISTICS_BUDGET_BYTES = 2**30
#: small-batch bias: the median over channels of var_stored / var_exact within this of (m-1)/m, and
#: (m-1)/m below SMALL_BATCH_MAX_RATIO (otherwise the bias is too small to tell from noise).
SMALL_BATCH_RATIO_TOLERANCE = 0.06
SMALL_BATCH_MAX_RATIO = 0.95
#: input scale: the first BN layer's stored statistics fit a standard rescaling of x (x/255, 2x − 1, ...) with
#: a mismatch (median over channels of max(|ln divisor ratio|, |mean shift|)) below INPUT_SCALE_FIT, while x as
#: given is off by more than INPUT_SCALE_OFF and by INPUT_SCALE_RATIO times the rescaling's mismatch.
INPUT_SCALE_OFF = 0.4      # a factor 1.5 in the divisor
INPUT_SCALE_FIT = 0.25     # a factor 1.28
INPUT_SCALE_RATIO = 4.0
#: batch-1 and batched inference "match" when no output differs by more than this (float32 noise).
BATCH1_TOLERANCE = 1e-4
#: a training-mode output at batch 1 is "constant" when it is within this of beta (relative to 1 + |beta|).
CONSTANT_TOLERANCE = 1e-5
#: the gap decomposition names a part when it exceeds this (absolute metric) and 2 standard errors.
GAP_THRESHOLD = 0.05
#: per-step weights "balance" the classes when the positive steps carry a share of the total weight
#: within this of 1/2 (what w = neg/pos gives).
BALANCED_SHARE_TOLERANCE = 0.10
#: gradient noise: batches drawn at b_small = the batch size and b_big = BIG_FACTOR x b_small.
BIG_FACTOR = 8
SMALL_BATCHES = 24
BIG_BATCHES = 8
#: B_simple is "resolved" when its 90 % bootstrap interval spans less than this factor.
NOISE_RESOLVED_FACTOR = 2.0
#: the largest batch the checks use (a larger --batch-size is capped, and the report says so).
MAX_BATCH_SIZE = 4096

THRESHOLDS = {name: value for name, value in globals().items()
              if name.isupper() and isinstance(value, (int, float)) and name != "SCHEMA_VERSION"}

# the lesson section that teaches each check: (notebook, section heading)
LESSONS = {
    "warmup": ("04_batchnorm_running_statistics.ipynb", "1. How the moving averages warm up"),
    "precise": ("04_batchnorm_running_statistics.ipynb", "6. Precise BN: recomputing the statistics exactly"),
    "gap": ("04_batchnorm_running_statistics.ipynb", "2. Decomposing the train/validation gap"),
    "batch1": ("03_batchnorm_train_vs_inference.ipynb", "2. Three ways to call the same model"),
    "streaming": ("03_batchnorm_train_vs_inference.ipynb", "3. The accepted answer, tested"),
    "noise": ("01_steps_epochs_and_batches.ipynb",
              "The gradient noise scale: when does a bigger batch stop helping?"),
    "timestep": ("06_imbalanced_timestep_labels.ipynb", "3. Per-timestep weights done right"),
}

CHECKS = ("bn", "batch1", "gap", "noise", "timestep")


def parse_fail_on(text: str) -> tuple[str, ...]:
    """'bn_stale,input_scale' or a severity ('error', 'warning') -> the codes; ValueError names unknown ones."""
    wanted = [t.strip() for t in str(text).split(",") if t.strip()]
    if not wanted:
        raise ValueError("expected one or more codes or severities")
    codes: list[str] = []
    for item in wanted:
        if item in SEVERITIES:
            rank = SEVERITIES.index(item)
            codes += [c for c, (sev, _, _) in CODES.items() if SEVERITIES.index(sev) <= rank]
        elif item in CODES:
            codes.append(item)
        else:
            raise ValueError(f"unknown code {item!r}; codes: {', '.join(CODES)}; or a severity: "
                             f"{', '.join(SEVERITIES)}")
    return tuple(dict.fromkeys(codes))
