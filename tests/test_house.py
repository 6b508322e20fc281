"""Design rules the layout relies on (DESIGN.md)."""
import json
import subprocess
import sys

RAY_FREE = ["data", "synthetic", "model", "schedules", "config", "train", "predict", "report", "best", "space"]


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
