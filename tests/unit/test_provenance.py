"""provenance() and machine_description(): what a committed result was computed on."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from helpers.workbook import committed
from helpers.workbook.committed import VECTOR_FLAGS, cpu_from_cpuinfo, machine_description

FIELDS = {"machine": str, "processor": str, "cpu_count": int, "cores_usable": int, "cpu_model": str,
          "cpu_flags": list, "cpu_flags_source": str, "intra_op_threads": int, "inter_op_threads": int,
          "device": str, "gpus": list}

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse4_1 sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni amx_tile

processor\t: 1
model name\t: something else
flags\t\t: fpu sve
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes asimdhp asimddp sve sve2 i8mm bf16
CPU implementer\t: 0x41
"""


def test_cpuinfo_parsing_x86_and_arm():
    assert cpu_from_cpuinfo(X86) == ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
                                     ["sse4_1", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                      "avx512_vnni", "amx_tile"])
    assert cpu_from_cpuinfo(ARM) == ("", ["asimd", "asimdhp", "asimddp", "sve", "sve2", "i8mm", "bf16"])
    assert cpu_from_cpuinfo("") == ("", [])


def test_machine_description_fields_and_types():
    info = machine_description()
    for key, kind in FIELDS.items():
        assert isinstance(info[key], kind), f"{key}: {info[key]!r} is not {kind.__name__}"
    assert info["onednn_opts_in_effect"] in (True, False, None)
    assert info["cpu_model"].strip()
    assert set(info["cpu_flags"]) <= set(VECTOR_FLAGS)
    assert 1 <= info["cores_usable"] <= info["cpu_count"]
    assert info["intra_op_threads"] >= 0 and info["inter_op_threads"] >= 0     # 0: TensorFlow's default
    assert info["device"] == (", ".join(info["gpus"]) if info["gpus"] else "CPU")
    if hasattr(os, "sched_getaffinity"):
        assert info["cores_usable"] == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="Linux /proc/cpuinfo only")
def test_cpu_flags_are_those_of_proc_cpuinfo():
    text = Path("/proc/cpuinfo").read_text()
    listed = set()
    for line in text.splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            listed = set(line.split(":", 1)[1].split())
            break
    info = machine_description()
    assert info["cpu_flags_source"] == "/proc/cpuinfo"
    for flag in VECTOR_FLAGS:               # e.g. avx512f listed exactly when /proc/cpuinfo lists it
        assert (flag in info["cpu_flags"]) == (flag in listed), flag
    if platform.machine() in ("x86_64", "AMD64"):
        model = next(l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name"))
        assert info["cpu_model"] == model


@pytest.mark.parametrize("setting", ["0", "1"])
def test_onednn_setting_is_what_tensorflow_does(setting):
    """TF_ENABLE_ONEDNN_OPTS=0 turns TensorFlow's oneDNN kernels off, =1 on (x86-64 wheels are built with
    them), and the description says so."""
    code = "import json; from helpers.workbook.committed import machine_description as m; print(json.dumps(m()))"
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    in_effect = json.loads(done.stdout.strip().splitlines()[-1])["onednn_opts_in_effect"]
    if setting == "0":
        assert in_effect in (False, None)
    elif platform.machine() in ("x86_64", "AMD64"):
        assert in_effect in (True, None)


def test_provenance_carries_the_machine_description():
    now = committed.utc_now()
    info = committed.provenance("python -m helpers.example", started=now, finished=now + timedelta(seconds=3),
                                rows=7, extra_field=1)
    assert set(FIELDS) | {"onednn_opts_in_effect"} <= set(info)
    assert {"command", "rows", "started_utc", "finished_utc", "wall_seconds", "python", "tensorflow", "keras",
            "numpy", "env", "extra_field"} <= set(info)
    assert info["wall_seconds"] == 3.0 and info["rows"] == 7
    json.dumps(info)                        # writable as it is


def test_write_table_replaces_the_table_only_once_every_row_is_written(tmp_path):
    out = tmp_path / "t.csv"
    out.write_text("old\n")
    rows = committed.write_table(out, ["seed", "x"], [0, 1], lambda s: [{"seed": s, "x": 10 * s}],
                                 command="python -m example", seeds=[0, 1])
    assert [r["x"] for r in rows] == [0, 10]
    assert [(r["seed"], r["x"]) for r in committed.read_csv_rows(out)] == [(0, 0), (1, 10)]
    info = json.loads(committed.provenance_path(out).read_text())
    assert info["command"] == "python -m example" and info["rows"] == 2 and info["seeds"] == [0, 1]
    assert not out.with_name("t.csv.partial").exists()

    def fails_on_the_second(seed):
        if seed == 1:
            raise RuntimeError("stopped")
        return [{"seed": seed, "x": 5}]

    with pytest.raises(RuntimeError):
        committed.write_table(out, ["seed", "x"], [0, 1], fails_on_the_second, command="c")
    assert [(r["seed"], r["x"]) for r in committed.read_csv_rows(out)] == [(0, 0), (1, 10)]   # untouched
    assert committed.read_csv_rows(out.with_name("t.csv.partial")) == [{"seed": 0, "x": 5}]   # what was done
