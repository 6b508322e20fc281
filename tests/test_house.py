"""Design rules the layout relies on (DESIGN.md)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RAY_FREE = ["data", "synthetic", "model", "schedules", "config", "train", "predict", "report", "best", "space",
            "figures", "speed", "bench"]


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



@pytest.mark.parametrize("module", ["tune_cvae.train", "tune_cvae.predict", "tune_cvae.synthetic",
                                    "tune_cvae.report", "tune_cvae.bench"])
def test_help_answers_before_torch_or_pandas_load(module):
    code = (f"import runpy, sys\nsys.argv = ['{module}', '--help']\ntry:\n    runpy.run_module('{module}', "
            f"run_name='__main__')\nexcept SystemExit:\n    pass\nprint('LOADED', 'torch' in sys.modules or "
            f"'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr
    assert out.stdout.strip().endswith("LOADED False")
