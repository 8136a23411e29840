"""Measuring loss spikes without fooling yourself (lesson 06), by responsibility:

    flags        running median of the previous points; ratio, jump and the spike flag; Wilson interval
    inspector    true per-batch losses from Keras logs (SpikeInspector), loss breakdown, fixed-model batches
    training     make_split, TaggerTrainer (one compiled step; the loss and the step are its arguments,
                 default per_step_loss / adam_step), train_run → RunResult,
                 replay_until_spike (a weighted run replayed with snapshots up to its first spike)
    asker        the asker's regime: Adam 1e-3, batch 128, w = neg/pos, 512-step series, trained to the fit and
                 200 steps on, spikes counted after the fit
    sweeps       spike-map cells over seeds and their summary
    stretch      the fitted checkpoints (data/asker_checkpoints/), positive-free and ordinary batches, and the
                 remedies table (data/remedies.csv): from a checkpoint, a stretch without positives, then ordinary batches;
                 two remedies from the first step (data/from_scratch.csv)
    committed    the committed CSVs: columns, reading, appending, provenance, row comparison
    plots        figures and widget views
    regenerate   the command that regenerates data/spike_map.csv, data/asker_regime.csv, the checkpoints,
                 data/remedies.csv and data/from_scratch.csv:
                 python -m helpers.spikes.regenerate   (python -m helpers.spikes is the same)

Everything is re-exported here, so notebooks keep `from helpers import spikes; spikes.train_run(...)`.
"""
from .asker import ASKER_DEFAULTS, after_fit_summary, asker_row, asker_run, asker_split, pr_auc_curve
from .committed import (ASKER_COLUMNS, DATA_DIR, SPIKE_MAP_COLUMNS, SWEEP_COLUMNS, column_spreads, read_csv_rows,
                        read_spike_map)
from .flags import flag_spikes, jumps_above_median, running_median, running_median_ratio, wilson_interval
from .inspector import (SpikeInspector, fixed_model_batch_losses, inspected_tagger, loss_breakdown,
                        undo_running_mean)
from .plots import (figure_png, mechanism_table, plot_batch_vs_monitored, plot_example_series, plot_fit_curves,
                    plot_run, plot_pr_curve, plot_spike_map)
from .stretch import (CHECKPOINT_DIR, SCRATCH_COLUMNS, SCRATCH_DEFAULTS, STRETCH_COLUMNS, STRETCH_DEFAULTS,
                      STRETCH_REMEDIES, checkpoint_path, load_checkpoint, normal_batches, quiet_batches, scratch_row,
                      scratch_run, stretch_row, stretch_run, summarise_stretch, weighted_bce)
from .sweeps import SWEEP_DEFAULTS, spike_map_cell, summarise_spike_map
from .training import (REMEDIES, DataSplit, RunResult, TaggerTrainer, adam_step, make_split, per_step_loss,
                       replay_until_spike, train_run, trainer_for)

__all__ = ["ASKER_DEFAULTS", "after_fit_summary", "asker_row", "asker_run", "asker_split", "pr_auc_curve",
           "ASKER_COLUMNS", "DATA_DIR", "SPIKE_MAP_COLUMNS", "SWEEP_COLUMNS", "column_spreads", "read_csv_rows",
           "read_spike_map", "flag_spikes", "jumps_above_median", "running_median", "running_median_ratio",
           "wilson_interval", "SpikeInspector", "fixed_model_batch_losses", "inspected_tagger", "loss_breakdown",
           "undo_running_mean", "figure_png", "mechanism_table", "plot_batch_vs_monitored", "plot_fit_curves",
           "plot_example_series", "plot_pr_curve", "plot_run", "plot_spike_map", "SWEEP_DEFAULTS",
           "spike_map_cell", "summarise_spike_map", "REMEDIES", "DataSplit", "RunResult", "TaggerTrainer", "make_split",
           "replay_until_spike", "train_run", "trainer_for", "per_step_loss", "adam_step", "CHECKPOINT_DIR",
           "STRETCH_COLUMNS", "STRETCH_DEFAULTS", "STRETCH_REMEDIES", "checkpoint_path", "load_checkpoint",
           "normal_batches", "quiet_batches", "stretch_row", "stretch_run", "summarise_stretch", "weighted_bce",
           "SCRATCH_COLUMNS", "SCRATCH_DEFAULTS", "scratch_row", "scratch_run"]
