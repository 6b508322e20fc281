"""The leaderboard: rollouts of the test videos, submission.csv in its format, GIFs (run_best.py uses these), and
its score, which is also a command:

    python -m tune_cvae score SUBMISSION --truth DIR

DIR holds <i>/frame<N>.png, the true frames of test video i (the built-in data has them in test_truth/). This
module is the one home of the frames the leaderboard scores (SCORED); validation's val_psnr_600 and the report's
window read them here.
"""
import math
from pathlib import Path

import numpy as np
import torch

from tune_cvae.common import UserError, say, write_whole
from tune_cvae.lab.data import IMG_H, IMG_W, TEST_LEN, load_video

PIXELS = 3 * IMG_H * IMG_W  # 6144 values per frame, C, H, W order
SCORED = slice(1, 601)      # the leaderboard scores frames 1..600 of each video (frame 0 is given)
PUBLIC_VIDEOS = 3           # videos 0-2 public, the rest private


def scored_mean(psnr):
    """The mean over the frames the leaderboard scores of a video's PSNR per frame given from frame 1 on (a
    validation rollout's frames 1..T-1): val_psnr_600."""
    return float(psnr[:SCORED.stop - 1].mean())


def predict_tests(run, infer_z: str = "zero", seed: int = 0) -> torch.Tensor:
    """Each test video of a train.Run's dataset: its given first frame then 629 frames rolled out by the run's
    model (with its precision and compiled step), all videos together: (K, 630, 3, 32, 64) floats in [0, 1] on
    the CPU."""
    gen = torch.Generator(run.device).manual_seed(seed)  # the prior's z is drawn where the rollout runs
    return run.rollout(run.dataset.test_first.float() / 255, run.dataset.test_label.float() / 255, infer_z,
                       gen).cpu()


def to_uint8(videos: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] (any shape) -> the leaderboard's integers rint(x * 255), clamped to 0..255, uint8."""
    return torch.round(videos.clamp(0, 1) * 255).to(torch.uint8)


def submission_frame(videos: torch.Tensor):
    """(K, 630, 3, 32, 64) floats in [0, 1] -> the submission table (a DataFrame): columns id, 0..6143 (each frame
    flattened in C, H, W order), one row per frame, video after video."""
    import pandas as pd
    values = to_uint8(videos).reshape(-1, PIXELS).numpy().astype(np.int64)
    table = pd.DataFrame(values, columns=[str(i) for i in range(PIXELS)])
    table.insert(0, "id", np.arange(len(table)))
    return table


def check_submission(table, n_videos):
    """The leaderboard's format, checked before anything is written."""
    expected = ["id"] + [str(i) for i in range(PIXELS)]
    if list(table.columns) != expected:
        raise UserError(f"submission columns must be id, 0..{PIXELS - 1}")
    if len(table) != n_videos * TEST_LEN or not (table["id"].to_numpy() == np.arange(len(table))).all():
        raise UserError(f"submission needs {n_videos * TEST_LEN} rows with ids 0..{n_videos * TEST_LEN - 1}")
    values = table.iloc[:, 1:].to_numpy()
    if values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255:
        raise UserError("submission values must be integers in 0..255")


def write_submission(path, videos: torch.Tensor):
    """submission.csv of videos (K, 630, 3, 32, 64) in [0, 1], checked, then written whole."""
    table = submission_frame(videos)
    check_submission(table, videos.shape[0])
    write_whole(path, lambda tmp: table.to_csv(tmp, index=False))
    return table


def write_gifs(out_dir, videos: torch.Tensor, fps: int = 20):
    """pred_seq<i>.gif of each video (K, T, 3, H, W) in [0, 1]."""
    import imageio.v2 as imageio
    for i, video in enumerate(to_uint8(videos)):
        imageio.mimsave(Path(out_dir) / f"pred_seq{i}.gif", list(video.permute(0, 2, 3, 1).numpy()),
                        duration=1000 / fps, loop=0)


def _psnr_rows(pred, true):
    """Per-row PSNR on 0..255 integers, as the leaderboard computes it (capped at 100 dB for a perfect row)."""
    mse = ((pred.astype(np.float64) - true.astype(np.float64)) ** 2).mean(axis=1)
    with np.errstate(divide="ignore"):
        return np.minimum(20 * math.log10(255) - 10 * np.log10(mse), 100.0)


def score_arrays(pred: np.ndarray, true: np.ndarray) -> dict:
    """The leaderboard's scores in dB ({score, public, private}: the mean PSNR of the scored frames over all
    videos, over the public ones, over the private ones) of pred against true, each (K, 630, 6144) integers."""
    per_video = np.stack([_psnr_rows(p[SCORED], t[SCORED]) for p, t in zip(pred, true)])
    result = {"score": float(per_video.mean()), "public": float(per_video[:PUBLIC_VIDEOS].mean())}
    if len(per_video) > PUBLIC_VIDEOS:
        result["private"] = float(per_video[PUBLIC_VIDEOS:].mean())
    return result


def load_truth(truth_dir, n_videos):
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise UserError(f"{truth_dir}: no such ground-truth folder")
    return np.stack([load_video(truth_dir / str(i), TEST_LEN).reshape(TEST_LEN, PIXELS).numpy()
                     for i in range(n_videos)])


def score(submission, truth_dir):
    """The leaderboard's score of a submission.csv, and beside it the score of repeating each first frame."""
    import pandas as pd
    submission = Path(submission)
    if not submission.is_file():
        raise UserError(f"{submission}: no such submission file")
    try:
        table = pd.read_csv(submission)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{submission}: not a CSV file ({e})") from None
    n_videos = len(table) // TEST_LEN
    try:
        check_submission(table, n_videos)
    except UserError as e:
        raise UserError(f"{submission}: {e}") from None
    pred = table.iloc[:, 1:].to_numpy().reshape(n_videos, TEST_LEN, PIXELS)
    true = load_truth(truth_dir, n_videos)
    repeat = np.repeat(true[:, :1], TEST_LEN, axis=1)
    return {"submission": score_arrays(pred, true), "repeat_first_frame": score_arrays(repeat, true)}


def format_score(result):
    lines = []
    for name, s in result.items():
        parts = [f"{k} {v:.2f} dB" for k, v in s.items()]
        lines.append(f"{name:>20}: " + ", ".join(parts))
    return "\n".join(lines)


def main(args):
    """`python -m tune_cvae score` (flags: cli.score_flags)."""
    say(format_score(score(args.submission, args.truth)), result=True)
