"""run_best.py on a finished search: a valid scored submission and its evidence, one-line errors, SIGTERM and a
full disk leaving an earlier output as it was."""
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageSequence

from helpers import read_trials
from tune_cvae.experiment.staging import OUT_MARK
from tune_cvae.lab.leaderboard import check_submission


def run_best(*args):
    return subprocess.run([sys.executable, "run_best.py", *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_run_best_writes_a_valid_scored_submission(smoke, tmp_path):
    out = tmp_path / "best"
    proc = run_best("--experiment", smoke, "--out", out, "--infer-z", "zero", "--seeds", 2)
    assert proc.returncode == 0, proc.stderr
    assert "winner: trial" in proc.stderr
    # same config, seed and thread count as the trial: the retraining reproduces the trial's value
    line = next(x for x in proc.stderr.splitlines() if x.startswith("trial's val_psnr at epoch"))
    trial_value, retrained = (float(part.split(": ")[1].split(" dB")[0]) for part in line.split(";"))
    assert trial_value == retrained and "warning" not in proc.stderr
    table = pd.read_csv(out / "submission.csv")
    check_submission(table, 5)
    assert sorted(p.name for p in out.glob("pred_seq*.gif")) == [f"pred_seq{i}.gif" for i in range(5)]
    with Image.open(out / "pred_seq0.gif") as gif:  # identical neighbours are merged: count their durations
        assert gif.size == (64, 32)
        assert sum(f.info["duration"] for f in ImageSequence.Iterator(gif)) == pytest.approx(630 * 50)
    per_frame = pd.read_csv(out / "val_psnr_per_frame.csv")
    assert len(per_frame) == 629 and (out / "val_psnr_per_frame.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_psnr"] == pytest.approx(per_frame.psnr.mean(), rel=1e-5)
    assert set(summary["score"]) == {"submission", "repeat_first_frame"}
    assert "repeat_first_frame" in proc.stdout and (out / "model.ckpt").is_file()
    winner = read_trials(smoke / "trials.csv").iloc[0]
    assert summary["trial_id"] == str(winner.trial_id)
    seeds = summary["seeds"]  # --seeds 2: mean and std over two retrainings
    assert seeds["n"] == 2 and len(seeds["best_val_psnr"]) == 2
    assert seeds["best_val_psnr"][0] == pytest.approx(summary["val_psnr"], rel=1e-6)  # the submitted epoch's
    assert seeds["std"] == pytest.approx(np.std(seeds["best_val_psnr"], ddof=1))
    assert "over 2 seeds" in proc.stdout


@pytest.mark.slow
def test_run_best_errors_are_one_line(smoke, tmp_path):
    missing = tmp_path / "missing"
    proc = run_best("--experiment", missing)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {missing}: experiment folder does not exist"
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(smoke / "search.yaml", empty / "search.yaml")
    proc = run_best("--experiment", empty)
    assert proc.returncode == 2 and "no trial finished an epoch" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_best("--experiment", smoke, "--data", tmp_path / "gone")
    assert proc.returncode == 2 and "the search's dataset is gone" in proc.stderr
    proc = run_best("--storage", tmp_path / "nowhere")
    assert proc.returncode == 2 and "no experiment here; run run_search.py first" in proc.stderr


@pytest.mark.slow
def test_sigterm_to_run_best_keeps_the_earlier_output_and_removes_its_staging(smoke, tmp_path):
    """What a batch scheduler's time limit sends: run_best.py ends with 143, the earlier output as it was."""
    out = tmp_path / "best"
    out.mkdir()
    (out / OUT_MARK).write_text("an earlier run_best.py output")
    (out / "submission.csv").write_text("earlier")
    proc = subprocess.Popen([sys.executable, "run_best.py", "--experiment", str(smoke), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(tmp_path.glob(".best.*")):  # its staging folder: the retraining has begun
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "terminated (SIGTERM); any earlier output is unchanged"
    assert "Traceback" not in stderr and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert (out / "submission.csv").read_text() == "earlier"


@pytest.mark.slow
def test_a_full_disk_under_run_best_is_one_line_and_leaves_nothing(smoke, tmpfs):
    disk = tmpfs("small", "2m")  # takes the write test, not the 60 MB submission.csv
    proc = run_best("--experiment", smoke, "--out", disk / "best", "--epochs", 1)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {disk / 'best'}: No space left on device while "
                                                    "writing it; any earlier output is unchanged")
    assert "Traceback" not in proc.stderr and list(disk.iterdir()) == []
    proc = run_best("--experiment", smoke, "--out", tmpfs("ro", "1m", read_only=True) / "best")
    assert proc.returncode == 2 and "cannot write there (Read-only file system)" in proc.stderr
