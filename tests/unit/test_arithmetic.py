"""helpers.workbook.arithmetic: the one-ulp nudge and the arithmetic a run records (in a child process:
the nudge patches Keras for the rest of the process)."""
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os
import numpy as np
import keras
from helpers.workbook.arithmetic import install_one_ulp_nudge, arithmetic

def build():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    return [w.numpy().copy() for w in m.weights]

plain = build()
install_one_ulp_nudge()
nudged, again = build(), build()
print(json.dumps({
    "changed": [int(np.sum(a != b)) for a, b in zip(plain, nudged)],
    "one_ulp": bool(nudged[0].flat[0] == np.nextafter(plain[0].flat[0], np.inf, dtype=np.float32)),
    "repeatable": all(np.array_equal(a, b) for a, b in zip(nudged, again)),
    "arithmetic": arithmetic()}))
"""


def _child(env):
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_nudge_moves_exactly_one_initial_weight_by_one_ulp_per_seeded_model():
    got = _child({"WORKBOOK_NUDGE_ONE_WEIGHT": "1", "TF_ENABLE_ONEDNN_OPTS": "1"})
    assert got["changed"] == [1, 0, 0, 0]          # the first kernel's first element, nothing else
    assert got["one_ulp"] and got["repeatable"]
    assert got["arithmetic"]["one_ulp_nudge"] is True and got["arithmetic"]["TF_ENABLE_ONEDNN_OPTS"] == "1"


def test_arithmetic_records_what_was_asked():
    got = _child({"NPY_DISABLE_CPU_FEATURES": "", "WORKBOOK_NUDGE_ONE_WEIGHT": ""})
    assert got["arithmetic"]["one_ulp_nudge"] is False and got["arithmetic"]["cpus_allowed"] >= 1


def test_every_deterministic_comparison_listed_is_a_finding_its_notebook_records():
    import re
    from helpers.workbook.notebooks import notebook_path
    from helpers.workbook.tolerances import DETERMINISTIC
    for stem, names in DETERMINISTIC.items():
        source = notebook_path(stem).read_text(encoding="utf-8")
        # record("name", ...) or record(f"name_{k}_...", ...): a placeholder matches any value of the parameter
        names_written = re.findall(r'record\(f?\\"([a-z0-9_{}]+)\\"', source)   # only [a-z0-9_{}]: safe in a regex
        recorded = [re.compile(re.sub(r"\{[a-z0-9_]+\}", "[a-z0-9_]+", n) + "$") for n in names_written]
        missing = [n for n in names if not any(r.match(n) for r in recorded)]
        assert not missing, (stem, missing)
