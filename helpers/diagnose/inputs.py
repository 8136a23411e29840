"""Reading what the user brings: the model (a path or a keras.Model) and the data (an .npz, arrays or
tf.data), checked, with one sentence naming the first problem (DiagnoseError).

Tasks: "classes" (integer, one-hot, soft or label-smoothed targets; accuracy), "regression" (a model
compiled with a regression loss, or continuous targets; mean squared error) and "timestep" (binary
per-timestep labels (N, T) or (N, T, 1) for an (N, T, 1) output; PR-AUC over all steps).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .codes import MAX_BATCH_SIZE

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
TASKS = ("auto", "classes", "regression", "timestep")
_REGRESSION_LOSSES = ("squared_error", "absolute_error", "mse", "mae", "huber", "log_cosh", "logcosh",
                      "squared_logarithmic", "msle", "mape", "absolute_percentage")


class DiagnoseError(Exception):
    """Bad input: the message is the one line the CLI prints (exit status 2)."""


def shorten(text: str, limit: int = 300) -> str:
    """The first line of `text`, cut at a word boundary (with '…') when longer than `limit`."""
    line = (str(text).strip().splitlines() or [""])[0].strip()
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " …"


def readable(path: Path, what: str, *, directory_ok: bool = False) -> None:
    path = Path(path)
    if not path.exists():
        raise DiagnoseError(f"{what} {path}: no such file")
    if path.is_dir():
        if directory_ok:
            return
        raise DiagnoseError(f"{what} {path}: is a directory, expected a file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise DiagnoseError(f"{what} {path}: unreadable ({err.strerror or err})") from None


# ---------------------------------------------------------------- the model


def import_user_code(spec: str) -> None:
    """--import: a module name (importable from the current directory or sys.path) or a .py file."""
    path = Path(spec).expanduser()
    try:
        if spec.endswith(".py") or path.exists():
            if not path.is_file():
                raise DiagnoseError(f"--import {spec}: no such file")
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            name = path.stem
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")
            importlib.import_module(spec)
    except DiagnoseError:
        raise
    except Exception as err:  # noqa: BLE001 — any failure of the user's code is reported in one line
        raise DiagnoseError(f"--import {spec}: {type(err).__name__}: {shorten(err, 200)}") from None


def _why_not_loaded(path: Path, err: Exception, unsafe: bool) -> str:
    text = f"{type(err).__name__}: {err}"
    low = text.lower()
    if "lambda" in low and ("safe_mode" in low or "unsafe" in low or "arbitrary code" in low):
        return (f"MODEL {path}: contains a Lambda layer, whose Python code Keras runs only when you trust the file: "
                "pass --unsafe (Python: unsafe=True) if you do")
    if ("could not locate" in low or "unknown layer" in low or "custom_objects" in low
            or "register_keras_serializable" in low or "not found" in low and "class" in low):
        import re
        name = (re.search(r"Could not locate (?:class|function) ['\"]([^'\"]+)['\"]", text)
                or re.search(r"Unknown (?:layer|object|class)[^'\"]*['\"]([^'\"]+)['\"]", text))
        what = f" {name.group(1)!r}" if name else ""
        return (f"MODEL {path}: uses a custom class{what} that is not registered: pass --import MODULE_OR_FILE "
                "(Python: imports=[...]) naming the module that defines it with "
                "@keras.saving.register_keras_serializable")
    return f"MODEL {path}: not loadable by Keras ({shorten(text, 240)})"


def load_model(path, *, imports=(), unsafe: bool = False):
    """A .keras (zip) or .h5 (HDF5) file, read only. A SavedModel folder gets a message saying what to do."""
    path = Path(path).expanduser()
    readable(path, "MODEL", directory_ok=True)
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            raise DiagnoseError(
                f"MODEL {path}: is a TensorFlow SavedModel folder, which Keras 3 cannot load as a model with layers "
                "(keras.layers.TFSMLayer gives inference only, without the BN layers diagnose reads). Load it where "
                "it was made (tf.keras / Keras 2) and save it as .keras (model.save('model.keras')), or pass the "
                "keras.Model itself to helpers.diagnose.diagnose")
        raise DiagnoseError(f"MODEL {path}: is a directory, expected a .keras or .h5 file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5_SIGNATURE:
        kind = "h5"
    elif zipfile.is_zipfile(path):
        kind = "keras"
    else:
        raise DiagnoseError(f"MODEL {path}: not a Keras model file (a .keras file is a zip archive and an .h5 file "
                            "an HDF5 file; this is neither)")
    for spec in imports:
        import_user_code(spec)
    import keras
    suffix_fix = None
    if kind == "keras" and path.suffix != ".keras":
        suffix_fix = "keras"   # Keras insists on the suffix: read a .keras-named copy
    elif kind == "h5" and path.suffix not in (".h5", ".hdf5"):
        suffix_fix = "h5"
    source = path
    if suffix_fix:
        import shutil
        import tempfile
        tmp = Path(tempfile.mkdtemp(prefix="diagnose-model-"))
        source = tmp / f"model.{suffix_fix}"
        shutil.copyfile(path, source)
    errors = []
    model = None
    for compile_ in (True, False):    # a custom loss may not deserialize: retry without compiling
        try:
            model = keras.saving.load_model(source, compile=compile_, safe_mode=not unsafe)
            break
        except Exception as err:  # noqa: BLE001
            errors.append(err)
    if model is None:
        raise DiagnoseError(_why_not_loaded(path, errors[-1], unsafe))
    if not isinstance(model, keras.Model):
        raise DiagnoseError(f"MODEL {path}: loads as {type(model).__name__}, not a keras.Model")
    return model


# ---------------------------------------------------------------- the data


def read_npz(path: Path) -> dict[str, np.ndarray]:
    path = Path(path).expanduser()
    readable(path, "DATA")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except Exception as err:  # noqa: BLE001 — any failure here means "not a readable .npz"
        raise DiagnoseError(f"DATA {path}: not a readable .npz file ({type(err).__name__})") from None
    if not isinstance(arrays, dict):
        raise DiagnoseError(f"DATA {path}: not an .npz archive of named arrays")
    return arrays


def dataset_arrays(ds, what: str, input_rank: int | None, limit: int = 1_000_000):
    """(x, y, w or None) from a tf.data.Dataset of (x, y[, w]) elements, batched or not (told apart by the
    model input's rank), at most about `limit` examples."""
    xs, ys, ws, n = [], [], [], 0
    for element in ds:
        if not isinstance(element, (tuple, list)) or len(element) not in (2, 3):
            raise DiagnoseError(f"{what}: a dataset must yield (x, y) or (x, y, sample_weight)")
        parts = [np.asarray(e) for e in element]
        xs.append(parts[0])
        ys.append(parts[1])
        ws.append(parts[2] if len(parts) == 3 else None)
        n += len(parts[0]) if (input_rank is None or parts[0].ndim == input_rank) else 1
        if n >= limit:
            break
    if not xs:
        raise DiagnoseError(f"{what}: the dataset is empty")
    join = np.concatenate if (input_rank is None or xs[0].ndim == input_rank) else np.stack
    w = None if any(v is None for v in ws) else join(ws)
    return join(xs), join(ys), w


def as_arrays(data, input_rank: int | None) -> tuple[dict[str, np.ndarray], str]:
    """data -> ({x_train, y_train, x_test, y_test[, sample_weight_train]}, a description)."""
    if isinstance(data, (str, Path)):
        return read_npz(Path(data)), str(data)
    if isinstance(data, (tuple, list)) and len(data) in (4, 5):
        keys = ("x_train", "y_train", "x_test", "y_test", "sample_weight_train")
        return {k: np.asarray(v) for k, v in zip(keys, data)}, "arrays"
    if isinstance(data, dict) and ("train" in data or "test" in data):
        out = {}
        for split in ("train", "test"):
            if split not in data:
                raise DiagnoseError(f"data: missing {split!r} (give both 'train' and 'test')")
            part = data[split]
            if isinstance(part, (tuple, list)):
                x, y, w = (list(part) + [None])[:3]
            else:
                x, y, w = dataset_arrays(part, f"data[{split!r}]", input_rank)
            out[f"x_{split}"], out[f"y_{split}"] = np.asarray(x), np.asarray(y)
            if split == "train" and w is not None:
                out["sample_weight_train"] = np.asarray(w)
        return out, "datasets"
    if isinstance(data, dict):
        return {k: np.asarray(v) for k, v in data.items() if v is not None}, "arrays"
    raise DiagnoseError(f"data: expected an .npz path, a dict of arrays, (x_train, y_train, x_test, y_test) or "
                        f"{{'train': ..., 'test': ...}}, got {type(data).__name__}")


def check_arrays(arrays: dict[str, np.ndarray], where: str) -> None:
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in arrays:
            raise DiagnoseError(f"{where}: missing key {key!r} (has {', '.join(sorted(arrays)) or 'none'})")
    for key, a in arrays.items():
        if key not in ("x_train", "y_train", "x_test", "y_test", "sample_weight_train"):
            continue
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise DiagnoseError(f"{where}: {key} has dtype {a.dtype}, expected numbers")
        if a.ndim == 0 or len(a) == 0:
            raise DiagnoseError(f"{where}: {key} is empty")
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise DiagnoseError(f"{where}: {key} contains {bad} NaN/inf values")
    for split in ("train", "test"):
        nx, ny = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
        if nx != ny:
            raise DiagnoseError(f"{where}: x_{split} has {nx} examples but y_{split} has {ny}")
    if len(arrays["x_train"]) < 2 or len(arrays["x_test"]) < 2:
        raise DiagnoseError(f"{where}: x_train and x_test need at least 2 examples each")


# ---------------------------------------------------------------- labels


@dataclass
class Labels:
    task: str            # classes | regression | timestep
    form: str            # what the user gave, in words
    metric_y: np.ndarray  # classes: int (N,); regression: float (N, k); timestep: 0/1 float (N, T)
    loss_y: np.ndarray   # shaped for the loss (classes: int (N,) or the soft (N, C); timestep (N, T, 1))


def _loss_name(model) -> str:
    loss = getattr(model, "loss", None)
    if loss is None or isinstance(loss, (list, tuple, dict)):
        return ""
    if isinstance(loss, str):
        return loss.lower()
    return (getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__).lower()


def compiled_for_regression(model) -> bool:
    name = _loss_name(model)
    return bool(name) and any(k in name for k in _REGRESSION_LOSSES)


def labels_for(y: np.ndarray, out_shape: tuple, split: str, task: str, model) -> Labels:
    """The task and the labels for the metric and the loss, or DiagnoseError."""
    y = np.asarray(y)
    rank = len(out_shape)
    if task == "auto":
        if rank == 3 and out_shape[-1] == 1 and y.ndim in (2, 3) and np.all((y == 0) | (y == 1)):
            task = "timestep"
        elif compiled_for_regression(model):
            task = "regression"
        elif rank == 2 and y.ndim == 1 and np.all(np.mod(y, 1) == 0):
            task = "classes"
        elif rank == 2 and y.ndim == 2 and y.shape[1] == out_shape[-1] and out_shape[-1] > 1 \
                and np.all(y >= 0) and np.allclose(y.sum(axis=1), 1.0, atol=1e-3):
            task = "classes"
        elif rank == 2 and y.ndim == 2 and y.shape[1] == 1 == out_shape[-1] and np.all(np.mod(y, 1) == 0):
            task = "classes"
        elif np.issubdtype(y.dtype, np.floating):
            task = "regression"
        else:
            task = "classes"
    if task == "timestep":
        if rank != 3 or out_shape[-1] != 1:
            raise DiagnoseError(f"--task timestep needs an (N, T, 1) model output; this model gives "
                                f"{('N',) + tuple(out_shape[1:])}")
        t = out_shape[1]
        yy = y[..., 0] if (y.ndim == 3 and y.shape[-1] == 1) else y
        if yy.ndim != 2 or (t is not None and yy.shape[1] != t):
            raise DiagnoseError(f"y_{split} has shape {y.shape}, which does not fit the model output "
                                f"(N, {t}, 1): expected (N, {t}) or (N, {t}, 1)")
        if not np.all((yy == 0) | (yy == 1)):
            raise DiagnoseError(f"y_{split}: labels out of range: per-timestep labels must be 0 or 1")
        yy = yy.astype(np.float32)
        return Labels("timestep", f"per-timestep binary {'(N, T, 1)' if y.ndim == 3 else '(N, T)'}", yy,
                      yy[..., None])
    if task == "regression":
        yr = y.astype(np.float32)
        target = yr.reshape(len(yr), -1)
        width = int(np.prod(out_shape[1:])) if all(d is not None for d in out_shape[1:]) else target.shape[1]
        if target.shape[1] != width:
            raise DiagnoseError(f"y_{split} has shape {y.shape}, which does not fit the model output "
                                f"{('N',) + tuple(out_shape[1:])} for regression")
        return Labels("regression", f"continuous targets {('N',) + tuple(y.shape[1:])}", target,
                      yr.reshape((len(yr),) + tuple(out_shape[1:])))
    # classes
    if rank != 2:
        raise DiagnoseError(f"the model output has shape {('N',) + tuple(out_shape[1:])}: class labels need an "
                            "(N, C) output (per-timestep labels an (N, T, 1) one)")
    c = out_shape[-1]
    if y.ndim == 2 and y.shape[1] == 1 and c == 1:
        y = y[:, 0]
    if y.ndim == 1:
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise DiagnoseError(f"y_{split}: class labels must be whole numbers (for continuous targets compile "
                                "the model with a regression loss, or pass --task regression)")
        hi = max(c, 2) - 1
        lo_v, hi_v = y.min(), y.max()
        if lo_v < 0 or hi_v > hi:
            raise DiagnoseError(f"y_{split}: labels out of range: found {lo_v:g}..{hi_v:g}, "
                                f"the model's {c} output(s) allow 0..{hi}")
        yi = y.astype(np.int64)
        return Labels("classes", "integer classes (N,)", yi, yi)
    if y.ndim == 2 and y.shape[1] == c:
        if np.any(y < 0) or np.any(y > 1) or not np.allclose(y.sum(axis=1), 1.0, atol=1e-3):
            raise DiagnoseError(f"y_{split}: labels out of range: a one-hot or soft (N, {c}) row must hold "
                                "values in [0, 1] that sum to 1")
        hard = bool(np.all((y == 0) | (y == 1)))
        form = f"one-hot (N, {c})" if hard else f"soft or label-smoothed (N, {c}); accuracy against the argmax"
        return Labels("classes", form, np.argmax(y, axis=1).astype(np.int64), y.astype(np.float32))
    raise DiagnoseError(f"y_{split} has shape {y.shape}, which does not fit the model output (N, {c})")


# ---------------------------------------------------------------- everything together


@dataclass
class Inputs:
    """The validated model and data."""
    model: Any
    model_label: str
    data_label: str
    x_train: np.ndarray
    x_test: np.ndarray
    train: Labels
    test: Labels
    num_outputs: int
    sample_weight_train: np.ndarray | None
    x_dtype: str
    x_range: tuple[float, float]
    n_train_given: int
    n_test_given: int

    @property
    def task(self) -> str:
        return self.train.task


def _subsample(arrays: dict, max_examples: int | None, seed: int) -> dict:
    if not max_examples:
        return arrays
    rng = np.random.default_rng(seed)
    out = dict(arrays)
    for split in ("train", "test"):
        n = len(arrays[f"x_{split}"])
        if n > max_examples:
            idx = np.sort(rng.choice(n, size=max_examples, replace=False))
            for key in (f"x_{split}", f"y_{split}") + (("sample_weight_train",) if split == "train" else ()):
                if key in arrays:
                    out[key] = arrays[key][idx]
    return out


def load_inputs(model, data, *, task: str = "auto", imports=(), unsafe: bool = False,
                max_examples: int | None = None, seed: int = 0) -> Inputs:
    """Everything the checks need, or DiagnoseError naming the first problem."""
    import keras
    if task not in TASKS:
        raise DiagnoseError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    if isinstance(data, (str, Path)):
        readable(Path(data).expanduser(), "DATA")
    if isinstance(model, (str, Path)):
        model_label = str(model)
        model = load_model(model, imports=imports, unsafe=unsafe)
    elif isinstance(model, keras.Model):
        for spec in imports:
            import_user_code(spec)
        model_label = f"<in-memory {type(model).__name__} {model.name!r}>"
    else:
        raise DiagnoseError(f"model: expected a path to a .keras/.h5 file or a keras.Model, got {type(model).__name__}")
    model_inputs = getattr(model, "inputs", None) or []
    if len(model_inputs) > 1:
        raise DiagnoseError(f"MODEL {model_label}: has {len(model_inputs)} inputs; diagnose needs one input and one output")
    expected = None
    try:
        expected = tuple(model.inputs[0].shape[1:]) if model_inputs else None
    except Exception:  # noqa: BLE001 — a subclassed model has no symbolic inputs
        expected = None
    arrays, data_label = as_arrays(data, None if expected is None else len(expected) + 1)
    check_arrays(arrays, f"DATA {data_label}")
    n_train_given, n_test_given = len(arrays["x_train"]), len(arrays["x_test"])
    arrays = _subsample(arrays, max_examples, seed)
    raw_x = arrays["x_train"]
    x_dtype = str(raw_x.dtype)
    x_range = (float(np.min(raw_x)), float(np.max(raw_x)))
    x_train = arrays["x_train"].astype(np.float32)
    x_test = arrays["x_test"].astype(np.float32)
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if expected is not None and (len(expected) != x.ndim - 1 or any(
                e is not None and e != s for e, s in zip(expected, x.shape[1:]))):
            raise DiagnoseError(f"{name} has shape {x.shape}, which does not fit the model input "
                                f"{('N',) + tuple(expected)}")
    try:
        out = model(x_train[:2], training=False)
    except Exception as err:  # noqa: BLE001
        raise DiagnoseError(f"x_train of shape {x_train.shape} does not fit the model "
                            f"({type(err).__name__}: {shorten(err, 200)})") from None
    if isinstance(out, (list, tuple, dict)):
        raise DiagnoseError(f"MODEL {model_label}: has several outputs; diagnose needs one input and one output")
    out_shape = (None,) + tuple(np.shape(out)[1:])
    train = labels_for(arrays["y_train"], out_shape, "train", task, model)
    test = labels_for(arrays["y_test"], out_shape, "test", train.task, model)
    if train.task == "timestep" and train.metric_y.shape[1] != test.metric_y.shape[1]:
        raise DiagnoseError(f"y_train has {train.metric_y.shape[1]} timesteps but y_test has {test.metric_y.shape[1]}")
    sw = arrays.get("sample_weight_train")
    if sw is not None:
        sw = np.asarray(sw, np.float32)
        if sw.ndim == 3 and train.task == "timestep" and sw.shape[-1] == 1:
            sw = sw[..., 0]                 # (N, T, 1) weights: the same as (N, T)
        allowed = [(len(x_train),)] + ([tuple(train.metric_y.shape)] if train.task == "timestep" else [])
        if sw.shape not in allowed:
            raise DiagnoseError(f"sample_weight_train has shape {sw.shape}, expected "
                                + " or ".join(str(a) for a in allowed))
        if np.any(sw < 0) or not np.all(np.isfinite(sw)):
            raise DiagnoseError("sample_weight_train: weights out of range: found negative or non-finite weights")
    return Inputs(model=model, model_label=model_label, data_label=data_label, x_train=x_train, x_test=x_test,
                  train=train, test=test, num_outputs=int(out_shape[-1] or 1), sample_weight_train=sw,
                  x_dtype=x_dtype, x_range=x_range, n_train_given=n_train_given, n_test_given=n_test_given)


def used_batch_size(batch_size: int, n_train: int) -> int:
    return int(max(2, min(batch_size, MAX_BATCH_SIZE, n_train)))
