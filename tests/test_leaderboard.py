"""The leaderboard: the submission's rows, columns and rounding, its score, the score command."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from tune_cvae.common import UserError
from tune_cvae.lab.leaderboard import check_submission, score, score_arrays, submission_frame


def test_submission_rows_columns_and_rounding():
    videos = torch.rand(5, 630, 3, 32, 64)
    videos[0, 1, 0, 0, 0], videos[0, 1, 0, 0, 1], videos[0, 1, 0, 0, 2] = 1.7, -0.2, 0.5 / 255 + 1e-6
    table = submission_frame(videos)
    assert table.shape == (3150, 6145) and list(table.columns[:3]) == ["id", "0", "1"]
    assert table.columns[-1] == "6143" and table["id"].tolist() == list(range(3150))
    row = table.iloc[1, 1:].to_numpy()
    assert row[0] == 255 and row[1] == 0 and row[2] == 1  # clamped, then rint(x * 255)
    # C, H, W order: value 64 is channel 0, row 1, column 0
    assert table.iloc[630 * 2 + 5, 1 + 64] == round(float(videos[2, 5, 0, 1, 0]) * 255)
    check_submission(table, 5)
    with pytest.raises(UserError, match="rows"):
        check_submission(table.iloc[:-1], 5)


def test_score_follows_the_leaderboard():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 256, (5, 630, 6144))
    pred = true.copy()
    pred[:, 1:601] = np.clip(true[:, 1:601] + 4, 0, 255)  # frames 1..600 off by about 4
    pred[:, 601:] = 0                                     # frames >= 601 do not count
    pred[:, 0] = 0                                        # nor does frame 0
    expected = [20 * math.log10(255) - 10 * math.log10(((p - t) ** 2).mean())
                for v in range(5) for p, t in zip(pred[v, 1:601], true[v, 1:601])]
    result = score_arrays(pred, true)
    assert result["score"] == pytest.approx(np.mean(expected))
    assert result["public"] == pytest.approx(np.mean(expected[:1800]))
    assert result["private"] == pytest.approx(np.mean(expected[1800:]))


def test_score_cli_on_the_builtin_truth(builtin_root, builtin, tmp_path):
    truth = torch.stack([torch.cat([builtin.test_first[i:i + 1]] * 630) for i in range(5)]).float() / 255
    submission_frame(truth).to_csv(tmp_path / "repeat.csv", index=False)
    result = score(tmp_path / "repeat.csv", builtin_root / "test_truth")
    assert result["submission"] == pytest.approx(result["repeat_first_frame"])
    proc = subprocess.run([sys.executable, "-m", "tune_cvae", "score", str(tmp_path / "nope.csv"),
                           "--truth", str(builtin_root / "test_truth")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path / 'nope.csv'}: no such submission file"
