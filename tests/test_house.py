"""Design rules the layout relies on (DESIGN.md)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RAY_FREE = sorted(p.stem for p in (ROOT / "tune_cvae").glob("*.py")
                  if p.stem not in ("trainable", "search", "__init__", "__main__"))


def test_library_modules_do_not_import_ray():
    """Only trainable.py and search.py may import Ray: the model, training and reports work without a cluster."""
    code = ("import importlib, json, sys\n"
            f"for name in {RAY_FREE!r}:\n"
            "    importlib.import_module('tune_cvae.' + name)\n"
            "    if 'ray' in sys.modules:\n"
            "        print(json.dumps(name)); break\n"
            "else:\n"
            "    print(json.dumps(None))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) is None, f"importing tune_cvae.{json.loads(proc.stdout)} imported ray"



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


@pytest.mark.parametrize("old", [["tune_cvae.train"], ["tune_cvae.predict", "score"], ["tune_cvae.report"],
                                 ["tune_cvae.synthetic"], ["tune_cvae.bench", "speed"]])
def test_the_older_module_forms_still_answer(old):
    out = subprocess.run([sys.executable, "-m", *old, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m tune_cvae"), out.stderr


def test_house_rules_of_the_library_and_scripts():
    """No definition after a `__main__` guard and no import after code (the light CLI entry answers --help, not
    early guards), and every function at most 50 lines."""
    import ast
    broken = []
    for path in sorted(ROOT.glob("tune_cvae/*.py")) + sorted(ROOT.glob("run_*.py")):
        src = path.read_text()
        tree = ast.parse(src)
        broken += [f"{path.name}: noqa E402"] if "noqa: E402" in src else []
        guard = next((n.lineno for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)),
                     None)
        broken += [f"{path.name}:{n.lineno} {n.name} after the __main__ guard" for n in tree.body
                   if guard and n.lineno > guard and isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        broken += [f"{path.name}:{n.lineno} {n.name}: {n.end_lineno - n.lineno + 1} lines" for n in ast.walk(tree)
                   if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 50]
    assert broken == []
