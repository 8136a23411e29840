"""Every notebook follows the workbook's skeleton (README, "Adding a notebook"), has no committed
outputs, ends with references into REFERENCES.md, and is listed in the README and in notebook 00;
nothing in the repository points at files a learner's clone does not have."""
import ast
import re
from pathlib import Path

import nbformat
import pytest

from helpers.workbook.notebooks import REPO_ROOT, notebook_paths, setup_cell_index

NOTEBOOKS = notebook_paths()
IDS = [p.stem for p in NOTEBOOKS]


def _nb(path):
    return nbformat.read(path, as_version=4)


def test_the_workbook_has_its_first_notebooks():
    assert IDS[:2] == ["00_start_here", "01_steps_epochs_and_batches"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_outputs_or_execution_counts(path):
    for i, cell in enumerate(_nb(path).cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"cell {i} has committed outputs"
            assert cell.execution_count is None, f"cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_skeleton(path):
    nb = _nb(path)
    cells = nb.cells
    first = cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {path.stem[:2]} · "), \
        "first cell: '# NN · Title'"
    assert "## What you will learn" in first.source
    bullets = [l for l in first.source.split("## What you will learn")[1].splitlines() if l.startswith("- ")]
    assert 3 <= len(bullets) <= 6, f"'What you will learn' has {len(bullets)} bullets (3–5 expected)"

    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    params_cell = cells[tagged[0]]
    tree = ast.parse(params_cell.source)
    names = []
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), \
            f"parameters cell: only `name = literal` lines ({ast.dump(node)[:60]})"
        ast.literal_eval(node.value)  # plain literals only
        names.append(node.targets[0].id)
    lines = [l for l in params_cell.source.splitlines() if l.strip()]
    assert all("#" in l for l in lines), "every parameter line has a comment giving its allowed range"
    assert "seed" in names and re.search(r"^seed = 0\b", params_cell.source, re.M), "default seed is 0"

    setup_src = cells[setup_cell_index(nb)].source
    assert "setup(" in setup_src and "from helpers import" in setup_src, "setup cell follows the parameters cell"
    for name in names:
        assert re.search(rf"\b{name}=\(\s*{name}\s*,", setup_src), f"parameter {name!r} is not validated in setup()"

    md = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert re.search(r"^## 1\. ", md, re.M), "numbered sections '## 1. ...'"
    assert "## Summary" in md and "## What to try next" in md
    code = [c for c in cells if c.cell_type == "code"]
    assert code[-1].source.strip() == "show_findings()", "the last cell shows the findings"
    assert any("check(" in c.source for c in code), "check cells assert the claims"
    assert any("record(" in c.source for c in code), "findings are recorded"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_listed_in_readme_and_start_here(path):
    readme = (REPO_ROOT / "README.md").read_text()
    start = "\n".join(c.source for c in _nb(REPO_ROOT / "notebooks" / "00_start_here.ipynb").cells)
    assert path.name in readme, f"{path.name} is not in README.md"
    if path.stem != "00_start_here":
        assert path.name in start, f"{path.name} is not listed in 00_start_here.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_widgets_are_timed(path):
    src = "\n".join(c.source for c in _nb(path).cells if c.cell_type == "code")
    if "interact_panel(" in src:
        assert "time_callbacks(" in src and re.search(r"record\(\s*\"widget_\w+_median_s\"", src)


def test_nothing_is_downloaded_at_run_time():
    pattern = re.compile(r"\.load_data\(|get_file\(|urlopen|requests\.get|urlretrieve")
    for path in list(NOTEBOOKS) + list((REPO_ROOT / "helpers").rglob("*.py")):
        text = path.read_text()
        assert not pattern.search(text), f"{path.name} seems to download at run time"


REFERENCE_KEY = re.compile(r"\[([A-Z][A-Za-z]*\d{4}[a-z]?|[A-Z][A-Za-z0-9]+)\](?!\()")


def reference_keys() -> set[str]:
    """The keys REFERENCES.md defines, written **[Key]** at the start of an entry."""
    return set(re.findall(r"^- \*\*\[([^\]]+)\]\*\*", (REPO_ROOT / "REFERENCES.md").read_text(), re.M))


def test_the_reference_list_defines_keys():
    assert len(reference_keys()) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_references_section_cites_into_the_reference_list(path):
    cells = _nb(path).cells
    heads = {i: c.source for i, c in enumerate(cells) if c.cell_type == "markdown"}
    refs = [i for i, src in heads.items() if re.search(r"^## References\s*$", src, re.M)]
    assert len(refs) == 1, "one '## References' section"
    next_steps = [i for i, src in heads.items() if "## What to try next" in src]
    last_code = max(i for i, c in enumerate(cells) if c.cell_type == "code")
    assert next_steps and next_steps[-1] <= refs[0] < last_code, \
        "'## References' comes after 'What to try next' and before the findings cell"
    section = cells[refs[0]].source.split("## References", 1)[1]
    cited = set(REFERENCE_KEY.findall(section))
    assert cited, "the References section cites at least one key of REFERENCES.md, e.g. [WuHe2018]"
    unknown = sorted(cited - reference_keys())
    assert not unknown, f"keys not defined in REFERENCES.md: {unknown}"


# Words that point outside the repository (reading aids a learner's clone does not have). Built from
# pieces so that this file does not itself contain them.
OUTSIDE = re.compile("|".join(["pro" + "be", "LITERA" + "TURE", "sha" + "red/", "STY" + "LE" + r"\.md"]),
                     re.IGNORECASE)


def _text_files():
    for root in ("notebooks", "helpers", "tests"):
        for path in sorted((REPO_ROOT / root).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and ".ipynb_checkpoints" not in path.parts:
                yield path
    yield REPO_ROOT / "README.md"


def test_nothing_points_outside_the_repository():
    found = []
    for path in _text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary data
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(REPO_ROOT)}:{n}: {line.strip()[:100]}")
    assert not found, "mentions of files outside the repository:\n" + "\n".join(found)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_output_comparison_markers(path):
    """nbval compares no output here (committed execution counts are empty): a marker would promise a
    comparison that never happens, so claims are asserted by check cells instead."""
    for i, cell in enumerate(_nb(path).cells):
        assert "NBVAL_CHECK_OUTPUT" not in cell.source, f"cell {i}: use a check cell instead"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebooks_import_the_parameter_rules_from_helpers(path):
    """What a page needs from the machinery's parameter rules is exported by `helpers` itself."""
    for i, cell in enumerate(_nb(path).cells):
        assert "helpers.workbook.params" not in cell.source, f"cell {i}: import it from helpers"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_lesson_code_cells_are_definitions_first(path):
    """A cell tagged "lesson-code" parses, and its definitions are what helpers/lessons/ holds."""
    from helpers.workbook import lesson_code
    for cell in lesson_code.tagged_cells(path):
        assert lesson_code.definitions(cell["source"]).strip(), f"cell {cell['id']} defines nothing"


# Public names still defined in two helper modules: the committed-table plumbing that is to get one home, and
# names whose two meanings live in separate layers (helpers.workbook's Run is a notebook's setup; the spike lesson's
# Run is one training run). A name added to two modules fails here.
KNOWN_DUPLICATE_NAMES: set[str] = set()


def test_public_names_are_defined_once_across_helpers():
    seen: dict[str, list[str]] = {}
    for path in sorted((REPO_ROOT / "helpers").rglob("*.py")):
        if "lessons" in path.parts:                 # generated from the notebooks, checked by lesson_code --check
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_") \
                    and node.name != "main":
                seen.setdefault(node.name, []).append(str(path.relative_to(REPO_ROOT)))
    twice = {name: where for name, where in seen.items() if len(where) > 1}
    assert set(twice) <= KNOWN_DUPLICATE_NAMES, {n: w for n, w in twice.items() if n not in KNOWN_DUPLICATE_NAMES}
    for name in ("build_model", "accuracy", "loss_function", "RunResult", "precise_statistics", "wilson_interval"):
        assert len(seen.get(name, [])) <= 1, (name, seen[name])    # the names the tree review found twice


def reading_minutes(nb) -> tuple[float, int]:
    """(minutes to read, longest code cell in lines): prose at 200 words a minute, code at 20 lines a minute."""
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    words = sum(len(c.source.split()) for c in nb.cells if c.cell_type == "markdown")
    return words / 200 + sum(s.count("\n") + 1 for s in code) / 20, max(s.count("\n") + 1 for s in code)


def test_reading_time_measure_on_a_small_notebook():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(" ".join(["word"] * 400)),
                                         nbformat.v4.new_code_cell("a = 1\nb = 2"), nbformat.v4.new_code_cell("c = 3")])
    assert reading_minutes(nb) == (2 + 3 / 20, 2)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_a_lesson_reads_in_35_minutes_with_no_code_cell_over_40_lines(path):
    minutes, longest = reading_minutes(_nb(path))
    assert minutes <= 35 and longest <= 40, f"{minutes:.1f} min to read, longest code cell {longest} lines"


def _helper_files() -> dict[str, str]:
    """helpers' module names ('helpers.results.long_runs') -> their files ('helpers/results/long_runs.py')."""
    out = {}
    for p in (REPO_ROOT / "helpers").rglob("*.py"):
        rel = p.relative_to(REPO_ROOT)
        if p.name != "__init__.py" and "workbook" not in rel.parts:
            out[".".join(rel.with_suffix("").parts)] = rel.as_posix()
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_each_section_links_the_helper_files_it_calls(path):
    files, nb = _helper_files(), _nb(path)
    aliases = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            for m in re.finditer(r"^\s*from (helpers(?:\.\w+)*) import (\w+)(?: as (\w+))?", cell.source, re.M):
                if f"{m.group(1)}.{m.group(2)}" in files:
                    aliases[m.group(3) or m.group(2)] = files[f"{m.group(1)}.{m.group(2)}"]
    missing, section = [], None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            headings = re.findall(r"^## (\d+\..*)$", cell.source, re.M)
            if headings:
                section = {"title": headings[-1], "links": set(), "used": set()}
                missing.append(section)
            if section:
                section["links"] |= set(re.findall(r"\(\.\./(helpers/[\w/]+\.py)\)", cell.source))
        elif section:
            section["used"] |= {aliases[a] for a in re.findall(r"\b(\w+)\.\w", cell.source) if a in aliases}
            section["used"] |= {files[m] for m in re.findall(r"^\s*from (helpers(?:\.\w+)+) import", cell.source, re.M)
                                 if m in files}
    unlinked = {s["title"]: sorted(s["used"] - s["links"]) for s in missing if s["used"] - s["links"]}
    assert not unlinked, unlinked


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_helper_name_a_notebook_uses_exists(path):
    """`module.name` for each helpers module a notebook imports, and each name it imports from one, exist: a
    renamed helper fails here even where the default run never reaches the cell that calls it."""
    import importlib
    modules, missing = {}, []
    cells = [c.source for c in _nb(path).cells if c.cell_type == "code"]
    for src in cells:
        for m in re.finditer(r"^\s*from (helpers(?:\.\w+)*) import ([\w, ]+?)\s*(?:#.*)?$", src, re.M):
            for part in m.group(2).split(","):
                name, _, alias = part.strip().partition(" as ")
                try:
                    modules[alias.strip() or name] = importlib.import_module(f"{m.group(1)}.{name}")
                except ImportError:
                    owner = importlib.import_module(m.group(1))
                    if not hasattr(owner, name):
                        missing.append(f"{m.group(1)}.{name}")
    for src in cells:
        for alias, attribute in re.findall(r"(?<![\w.])(\w+)\.(\w+)", src):
            if alias in modules and not hasattr(modules[alias], attribute):
                missing.append(f"{alias}.{attribute}")
    assert not missing, sorted(set(missing))
