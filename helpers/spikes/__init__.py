"""Loss spikes under Adam with extremely rare positives (lesson 07), and the spike rule the diagnosis uses:

    flags        running median of the previous points; ratio, jump and the spike flag; Wilson interval
    inspector    a model that logs the true per-batch loss and the gradient norm (InspectedModel)
    asker_state  the asker's regime at a laptop's size: data variants a–d, the 2×LSTM tagger, the logits loss,
                 one training run with its per-step log and snapshots, the remedies; and the command that
                 regenerates data/spike_runs/: python -m helpers.spikes.asker_state
    run_logs     the committed per-step logs read back and summarised (state, variants, biggest jumps, remedies)

Import the modules where they are needed (`from helpers.spikes import asker_state as st, run_logs`);
importing the package itself loads no TensorFlow.
"""
