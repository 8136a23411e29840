"""data/examples/ (lesson 08's default example) is what `python -m helpers.examples` wrote, as its
provenance records: the files' hashes, digits.npz's arrays, the model's architecture, the command."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import examples as ex
from helpers.data import load_digits
from helpers.workbook.committed import DATA_DIR

EXAMPLES = DATA_DIR / "examples"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def info() -> dict:
    return json.loads((EXAMPLES / ex.PROVENANCE_FILE).read_text())


def test_committed_files_match_their_provenance(info):
    """A file edited or regenerated without its provenance fails here: run `python -m helpers.examples`."""
    assert sorted(info["files"]) == sorted([ex.MODEL_FILE, ex.DATA_FILE])
    for name, recorded in info["files"].items():
        assert ex.file_record(EXAMPLES / name) == recorded, \
            f"data/examples/{name} is not the file examples.provenance.json records: regenerate with {ex.COMMAND}"


def test_provenance_names_the_command_and_the_machine(info):
    assert info["command"] == ex.COMMAND
    from helpers.workbook.regenerate import TABLES
    data_target = re.search(r"^data:.*?(?=^\S|\Z)", (REPO_ROOT / "Makefile").read_text(), re.M | re.S).group(0)
    assert "-m helpers.workbook.regenerate all" in data_target and TABLES["examples"][0] == "helpers.examples", \
        "`make data` regenerates the examples"
    assert (info["seed"], info["epochs"], info["batch_size"], info["momentum"]) == \
           (ex.SEED, ex.EPOCHS, ex.BATCH_SIZE, ex.MOMENTUM)
    assert {"tensorflow", "keras", "numpy", "python", "started_utc", "machine", "cpu_model", "cpu_flags",
            "device"} <= set(info)


def test_digits_npz_is_exactly_the_load_digits_split(info):
    """Regenerating gives the same arrays: the split of helpers.data.load_digits(), bit for bit."""
    digits = load_digits()
    with np.load(EXAMPLES / ex.DATA_FILE) as f:
        assert sorted(f.files) == sorted(ex.ARRAYS)
        for key in ex.ARRAYS:
            want, got = getattr(digits, key), f[key]
            assert got.dtype == want.dtype and got.shape == want.shape, key
            np.testing.assert_array_equal(got, want, err_msg=key)
    assert (info["train_images"], info["test_images"]) == (len(digits.x_train), len(digits.x_test))


def test_model_has_the_architecture_the_command_builds(info):
    """The weights are not bit-identical across CPUs; the architecture is: the layers, their shapes, the
    BN momentum and the number of training steps."""
    import keras
    stored = keras.saving.load_model(EXAMPLES / ex.MODEL_FILE)
    built = ex.example_cnn()
    assert [type(l).__name__ for l in stored.layers] == [type(l).__name__ for l in built.layers]
    assert [w.shape for w in stored.weights] == [w.shape for w in built.weights]
    assert stored.count_params() == built.count_params() == info["parameters"]
    bn = [l for l in stored.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bn) == 3 and all(l.momentum == ex.MOMENTUM for l in bn)
    steps = info["epochs"] * -(-info["train_images"] // info["batch_size"])
    assert int(stored.optimizer.iterations.numpy()) == info["steps"] == steps
