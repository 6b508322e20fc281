"""The speed benchmark: it runs and prints its table, its rows, its rollout in segments, its reference loop's
process, its flags."""
import json
import subprocess
import sys

import pytest
import torch

from helpers import write_lab4
from tune_cvae.bench.speed import TemplateProcess, _template_rollout_segments, rollout_in_segments, table_row
from tune_cvae.lab.config import make_config


def test_speed_benchmark_prints_its_table(tmp_path):
    """On a LAB4 folder of another image size with a 12-frame validation video (the rollout's length)."""
    data = write_lab4(tmp_path / "lab4", size=(48, 96), n_train=64, n_val=12)
    out = subprocess.run([sys.executable, "-m", "tune_cvae", "bench", "speed", "--model", "small", "--data",
                          str(data), "--reps", "1", "--min-seconds", "0", "--threads", "1",
                          "--json", str(tmp_path / "speed.json")], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "training, teacher forcing on" in out.stdout and "rollout of 12 frames" in out.stdout
    table = json.loads((tmp_path / "speed.json").read_text())["table"]
    assert [row["what"] for row in table] == ["training, teacher forcing on", "training, teacher forcing off",
                                              "rollout of 12 frames"]
    assert all(row["project"] > 0 and row["template_loop"] > 0 and row["ratio"] > 0 for row in table)
    for row in table:  # the median of the rounds' ratios, inside their range (one round here: its own)
        low, high = map(float, row["ratio_range"].split("-"))
        assert low - 0.005 <= row["ratio"] <= high + 0.005


def test_a_table_row_gives_the_median_of_the_rounds_ratios_and_their_range():
    """Rounds of frames/s: speeds shown as medians (or seconds per rollout), the ratio paired round by round."""
    row = table_row("training", [10.0, 30.0, 12.0], [10.0, 10.0, 4.0])
    assert (row["project"], row["template_loop"], row["ratio"], row["ratio_range"]) == (12.0, 10.0, 3.0, "1.00-3.00")
    row = table_row("rollout", [2.0, 4.0, 5.0], [1.0, 2.0, 4.0], frames=20)
    assert (row["unit"], row["project"], row["template_loop"], row["ratio"]) == ("s", 5.0, 10.0, 2.0)
    assert table_row("compiled", [5.0])["ratio_range"] == ""


def test_a_rollout_timed_in_segments_makes_the_whole_video_once_per_round_of_calls():
    """Each segment goes on from the frame the previous segment ended with; the segments' poses cover the video
    once; after the last segment the video starts again from its true first frame."""
    calls = []

    def fake_rollout(first, poses):  # a frame per pose after the first: 10 x the pose's number
        calls.append((first.item(), poses.tolist()))
        return torch.cat([first.view(1), 10 * poses[1:]])

    call = rollout_in_segments(fake_rollout, torch.tensor(-1.0), torch.arange(12.0), 4)
    for _ in range(5):
        call()
    starts = [first for first, _ in calls]
    assert starts[0] == -1 and starts[4] == -1
    assert starts[1:4] == [10 * poses[-1] for _, poses in calls[:3]]
    assert [pose for _, poses in calls[:4] for pose in poses[1:]] == list(range(1, 12))


def test_a_template_loop_whose_process_dies_ends_the_measurement_with_one_error():
    """Its traceback is the child's; the benchmark says the process ended instead of a broken pipe's traceback."""
    with pytest.raises(RuntimeError, match=r"the template loop's process ended \(exit code 1\)"):
        with TemplateProcess(_template_rollout_segments, config=make_config({}), device="cpu", weights=None,
                             first=None, labels=None, segments=1) as loop:
            loop(1)


def test_speed_benchmark_refuses_a_bad_flag_in_one_line():
    out = subprocess.run([sys.executable, "-m", "tune_cvae", "bench", "speed", "--reps", "0"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and out.stderr.strip() == "error: --reps 0: must be at least 1"
