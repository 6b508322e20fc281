"""Design rules the layout relies on (DESIGN.md)."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LIBRARY = sorted((ROOT / "tune_cvae").rglob("*.py"))
LAYERS = ("common", "lab", "experiment", "search", "bench")  # each imports only from those before it


def module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def layer(module):
    """A module's layer, by its place in the package: its rank in LAYERS, or the command line's (above all)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def imported(path):
    """Every module `path` imports, at the top or inside a function: [(line, module)]."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{alias.name}")
                                                     for alias in node.names if node.module == "tune_cvae"]
    return found


def test_layers_import_downward_only():
    """common <- lab <- experiment <- search <- bench, the command line on top: no module imports a layer above
    its own."""
    upward = [f"{module_name(p)}:{line} imports {name}" for p in LIBRARY for line, name in imported(p)
              if name.startswith("tune_cvae") and layer(name) > layer(module_name(p))]
    assert upward == []


def test_ray_is_imported_only_under_search():
    """The model, training, experiment folders and reports work without a cluster: no module outside search/
    names Ray, and importing each one leaves Ray unloaded."""
    outside = [p for p in LIBRARY if not module_name(p).startswith("tune_cvae.search") and p.name != "__main__.py"]
    named = [f"{module_name(p)}:{line}" for p in outside for line, name in imported(p)
             if name == "ray" or name.startswith("ray.")]
    assert named == []
    code = ("import importlib, json, sys\n"
            f"for name in {[module_name(p) for p in outside]!r}:\n"
            "    importlib.import_module(name)\n"
            "    if 'ray' in sys.modules:\n"
            "        print(json.dumps(name)); break\n"
            "else:\n"
            "    print(json.dumps(None))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) is None, f"importing {json.loads(proc.stdout)} imported ray"


def test_no_module_holds_two_jobs_by_size():
    """A module past about 300 lines probably holds two jobs."""
    assert [f"{module_name(p)}: {n} lines" for p in LIBRARY if (n := len(p.read_text().splitlines())) > 300] == []


def test_one_entry_point():
    """`python -m tune_cvae COMMAND` and the two scripts: no module of the library runs as a script of its own."""
    guarded = [module_name(p) for p in LIBRARY if p.name != "__main__.py" and "__main__" in p.read_text()]
    assert guarded == []


@pytest.mark.parametrize("command", [[], ["train"], ["report"], ["score"], ["synthetic"], ["bench"],
                                     ["bench", "speed"], ["bench", "quality"], ["bench", "search"]])
def test_help_answers_before_torch_or_pandas_load(command):
    code = (f"import runpy, sys\nsys.argv = ['tune_cvae', *{command!r}, '--help']\ntry:\n    "
            f"runpy.run_module('tune_cvae', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', 'torch' in sys.modules or 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "usage: python -m tune_cvae" in out.stdout, out.stderr
    assert out.stdout.strip().endswith("LOADED False")


@pytest.mark.parametrize("script", ["run_search.py", "run_best.py"])
def test_the_scripts_help_answers_before_torch_pandas_or_ray_load(script):
    code = (f"import runpy, sys\nsys.argv = ['{script}', '--help']\ntry:\n    runpy.run_path('{script}', "
            f"run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', [m for m in ('torch', 'pandas', 'ray') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and f"usage: {script}" in out.stdout, out.stderr
    assert out.stdout.strip().endswith("LOADED []")


def test_house_rules_of_the_library_and_scripts():
    """No definition after a `__main__` guard and no import after code (the light CLI entry answers --help, not
    early guards), and every function at most 50 lines."""
    broken = []
    for path in LIBRARY + sorted(ROOT.glob("run_*.py")):
        src = path.read_text()
        tree = ast.parse(src)
        broken += [f"{module_name(path)}: noqa E402"] if "noqa: E402" in src else []
        guard = next((n.lineno for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)),
                     None)
        broken += [f"{path.name}:{n.lineno} {n.name} after the __main__ guard" for n in tree.body
                   if guard and n.lineno > guard and isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        broken += [f"{path.name}:{n.lineno} {n.name}: {n.end_lineno - n.lineno + 1} lines" for n in ast.walk(tree)
                   if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 50]
    assert broken == []


def test_lines_fit_a_side_by_side_diff():
    """Every line of the library, the scripts and the tests at most 120 characters."""
    paths = LIBRARY + sorted(ROOT.glob("run_*.py")) + sorted((ROOT / "tests").glob("*.py"))
    assert [f"{path.relative_to(ROOT)}:{i}: {len(line)}" for path in paths
            for i, line in enumerate(path.read_text().splitlines(), 1) if len(line) > 120] == []
