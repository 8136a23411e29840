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


def _recorded_name_patterns(stem: str) -> list:
    """The finding names a notebook's cells record, as regexes: record("name", ...), record(f"name_{k}", ...) and
    the keys of record_many({...}); an f-string placeholder matches any value of the parameter."""
    import ast
    import re
    import nbformat
    from helpers.workbook.notebooks import notebook_path

    def pattern(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return re.escape(node.value) + "$"
        if isinstance(node, ast.JoinedStr):
            return "".join(re.escape(v.value) if isinstance(v, ast.Constant) else "[a-z0-9_]+" for v in node.values) + "$"
        return None

    names = []
    for cell in nbformat.read(notebook_path(stem), as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
                if node.func.id == "record":
                    names.append(pattern(node.args[0]))
                elif node.func.id == "record_many" and isinstance(node.args[0], ast.Dict):
                    names += [pattern(k) for k in node.args[0].keys if k is not None]
    return [re.compile(n) for n in names if n]


def test_recorded_names_are_read_from_record_and_record_many_calls(tmp_path, monkeypatch):
    import nbformat
    from helpers.workbook import notebooks
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        'record("alpha", 1)\nrecord(f"beta_{k}", 2)\nrecord_many({"gamma": 3, f"delta_{k}_x": 4})\nother("zeta", 5)')])
    nbformat.write(nb, tmp_path / "99_x.ipynb")
    monkeypatch.setattr(notebooks, "notebook_path", lambda stem: tmp_path / f"{stem}.ipynb")
    patterns = _recorded_name_patterns("99_x")
    for name in ("alpha", "beta_3", "gamma", "delta_b_x"):
        assert any(p.match(name) for p in patterns), name
    assert not any(p.match(n) for p in patterns for n in ("zeta", "alphabet", "delta_b_y"))


def test_every_deterministic_comparison_listed_is_a_finding_its_notebook_records():
    from helpers.workbook.tolerances import DETERMINISTIC
    for stem, names in DETERMINISTIC.items():
        recorded = _recorded_name_patterns(stem)
        missing = [n for n in names if not any(r.match(n) for r in recorded)]
        assert not missing, (stem, missing)
