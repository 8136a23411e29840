"""helpers.workbook.lesson_code: helpers/lessons/ is generated from the notebooks' cells tagged "lesson-code",
and --check catches a module that disagrees with its notebook."""
import json
import shutil

import pytest

from helpers.workbook import lesson_code as lc


def test_the_committed_modules_agree_with_the_notebooks(capsys):
    assert lc.main(["--check"]) == 0
    assert "agrees" in capsys.readouterr().out
    assert "l02.py" in lc.generated()                        # lesson 02's builder cell is tagged


def _copy(tmp_path):
    nbs, out = tmp_path / "notebooks", tmp_path / "lessons"
    nbs.mkdir()
    for name in lc.generated():
        src = next(lc.NOTEBOOKS_DIR.glob(f"{name[1:3]}_*.ipynb"))
        shutil.copy(src, nbs / src.name)
        shutil.copytree(lc.LESSONS_DIR, out, dirs_exist_ok=True)
    return nbs, out


def test_the_check_fails_after_a_tagged_cell_is_edited(tmp_path, capsys):
    nbs, out = _copy(tmp_path)
    args = ["--notebooks", str(nbs), "--out", str(out)]
    assert lc.main(["--check", *args]) == 0
    path = next(nbs.glob("02_*.ipynb"))
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if lc.TAG in c.get("metadata", {}).get("tags", []) and "groups=4" in "".join(c["source"]))
    cell["source"] = "".join(cell["source"]).replace("groups=4", "groups=2")
    path.write_text(json.dumps(nb))
    assert lc.main(["--check", *args]) == 1
    assert "l02.py" in capsys.readouterr().err
    assert lc.main(args) == 0                                 # regenerate: the module follows the page again
    assert "groups=2" in (out / "l02.py").read_text() and lc.main(["--check", *args]) == 0


def test_a_hand_edit_of_a_module_or_a_stray_module_fails_the_check(tmp_path):
    nbs, out = _copy(tmp_path)
    (out / "l02.py").write_text((out / "l02.py").read_text() + "\n# edited by hand\n")
    assert lc.disagreements(nbs, out) == ["l02.py"]
    lc.write_lessons(nbs, out)
    (out / "l09.py").write_text("x = 1\n")
    assert lc.disagreements(nbs, out) == ["l09.py"]


def test_definitions_keep_imports_functions_classes_and_constants_only():
    source = ("import numpy as np\nLIMIT = 3\nlimit = 4\n\n@staticmethod\ndef f(x):\n    return x\n\n"
              "class A:\n    pass\n\nexample = f(2)\nprint(example)\n")
    kept = lc.definitions(source)
    assert kept.startswith("import numpy as np") and "LIMIT = 3" in kept and "@staticmethod\ndef f" in kept
    assert "class A" in kept and "limit = 4" not in kept and "example" not in kept and "print" not in kept
    with pytest.raises(SyntaxError):
        lc.definitions("def broken(:\n")


def test_the_generated_builder_is_the_one_the_sweeps_use():
    from helpers.results import small_batch_runs
    from helpers.lessons import l02
    assert small_batch_runs.page_builder() is l02.build
    assert l02.__doc__.startswith("Lesson code of notebooks/02_batchnorm_small_batches.ipynb")


def test_lesson_06_undoes_keras_running_mean_exactly():
    """The page's undo_running_mean (lesson 06, section 5) against a running mean built here by hand."""
    import numpy as np
    from helpers.lessons.l06 import undo_running_mean
    own = np.array([0.5, 2.0, 0.25, 8.0])
    sizes = np.array([4, 4, 2, 3])
    running = np.cumsum(own * sizes) / np.cumsum(sizes)          # what Keras logs: the sample-weighted mean so far
    np.testing.assert_allclose(undo_running_mean(running, sizes), own, rtol=1e-12)
    assert not np.allclose(running, own)                         # the log itself is not the batch loss
