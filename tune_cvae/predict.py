"""Rollouts of the test videos, submission.csv in the leaderboard's format, GIFs, and the leaderboard's score.

    python -m tune_cvae.predict score SUBMISSION --truth DIR

DIR holds <i>/frame<N>.png, the true frames of test video i (the built-in data has them in test_truth/).
"""
import argparse
import json
import math
import os
import shutil
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pandas as pd
import torch
import yaml

from tune_cvae import UserError, fail, report, say
from tune_cvae import data as lab4
from tune_cvae.data import IMG_H, IMG_W, TEST_LEN, load_video
from tune_cvae.model import rollout
from tune_cvae.train import OPTIONS, load_checkpoint, make_config, pick_device, save_checkpoint, train, validate

PIXELS = 3 * IMG_H * IMG_W  # 6144 values per frame, C, H, W order
SCORED = slice(1, 601)      # the leaderboard scores frames 1..600 of each video
PUBLIC_VIDEOS = 3           # videos 0-2 public, the rest private



def predict_tests(model, data, infer_z="zero", seed=0, device="cpu"):
    """Each test video: its given first frame then 629 generated frames, floats in [0, 1], (K, 630, 3, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    videos = []
    for first, labels in zip(data.test_first, data.test_label):
        first = first.to(device).float() / 255
        videos.append(rollout(model, first, labels.to(device).float() / 255, infer_z, gen).cpu())
    return torch.stack(videos)


def to_uint8(videos):
    """Floats in [0, 1] -> the leaderboard's integers rint(x * 255), clamped to 0..255."""
    return torch.round(videos.clamp(0, 1) * 255).to(torch.uint8)


def submission_frame(videos):
    """(K, 630, 3, H, W) floats -> the submission table: columns id, 0..6143, one row per frame."""
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


def write_submission(path, videos):
    table = submission_frame(videos)
    check_submission(table, videos.shape[0])
    tmp = Path(f"{path}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return table


def write_gifs(out_dir, videos, fps=20):
    for i, video in enumerate(to_uint8(videos)):
        imageio.mimsave(Path(out_dir) / f"pred_seq{i}.gif", list(video.permute(0, 2, 3, 1).numpy()),
                        duration=1000 / fps, loop=0)


def _psnr_rows(pred, true):
    """Per-row PSNR on 0..255 integers, as the leaderboard computes it (capped at 100 dB for a perfect row)."""
    mse = ((pred.astype(np.float64) - true.astype(np.float64)) ** 2).mean(axis=1)
    with np.errstate(divide="ignore"):
        return np.minimum(20 * math.log10(255) - 10 * np.log10(mse), 100.0)


def score_arrays(pred, true):
    """pred, true: (K, 630, 6144) integers. Mean PSNR of frames 1..600: overall, public, private."""
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


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tune_cvae.predict", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="the leaderboard's score of a submission.csv (frames 1..600, mean PSNR)")
    s.add_argument("submission", help="submission.csv to score")
    s.add_argument("--truth", required=True, help="folder of true test frames: <i>/frame<N>.png")
    args = p.parse_args(argv)
    try:
        print(format_score(score(args.submission, args.truth)))
    except UserError as e:
        fail(e)


if __name__ == "__main__":
    main()


def best_checkpoint(trial_dir, metric, mode):
    """The state of the trial's checkpoint with the best metric (Ray keeps at most two)."""
    states = [load_checkpoint(p) for p in sorted(Path(trial_dir).glob("checkpoint_*/state.pt"))]
    if not states:
        raise UserError(f"{trial_dir}: the winning trial has no checkpoint")
    pick = max if mode == "max" else min
    return pick(states, key=lambda s: s["history"][-1][metric])


def run_best(experiment=None, storage="ray_results", data=None, epochs=None, from_checkpoint=False, infer_z=None,
             out=None, seeds=1, device="auto"):
    """Pick the winner of a search, retrain it (or continue its best checkpoint), validate, predict the test
    videos and write the submission and its evidence into `out` (default EXPERIMENT/best)."""
    exp = Path(experiment) if experiment else report.newest_experiment(storage)
    search, row, trial_dir = report.winner(exp)
    space = search["space"]
    params = json.loads((trial_dir / "params.json").read_text())
    config = make_config({k: v for k, v in params.items() if k in OPTIONS})
    searched = {p: config[p] for p in space["params"] if p in params}
    say(f"winner: trial {row['trial_id']} of {exp.name}, best {space['metric']} "
        f"{row['best_' + space['metric']]:.3f} after {row['epochs']} of {space['max_epochs']} epochs")
    say(f"        searched values: {json.dumps(searched)}")
    data_root = Path(data) if data else Path(search["data"])
    if not data_root.is_dir():
        raise UserError(f"{data_root}: the search's dataset is gone; pass --data with its new location")
    dataset = lab4.load(data_root)
    config["num_epoch"] = epochs or config["num_epoch"]
    state = None
    if from_checkpoint:
        state = best_checkpoint(trial_dir, space["metric"], space["mode"])
        config["num_epoch"] = max(config["num_epoch"], state["epoch"])
        say(f"continuing the winner's best checkpoint (epoch {state['epoch']}) to epoch {config['num_epoch']}")
    device = pick_device(device)
    out = Path(out) if out else exp / "best"
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    finals, run = [], None
    for k in range(seeds):
        cfg = {**config, "seed": config["seed"] + k}
        say(f"retraining with seed {cfg['seed']} ({k + 1}/{seeds}) for {cfg['num_epoch']} epochs on {device}")
        final, trained = train(cfg, dataset, device, state if k == 0 else None, progress=True)
        if final.get("diverged"):
            raise UserError(f"the winner's configuration diverged when retrained with seed {cfg['seed']}")
        finals.append(final)
        run = run or trained
    psnr, _ = validate(run.model, run.data, run.config, run.epoch - 1)  # = the last epoch's validation
    pd.DataFrame({"frame": range(1, len(psnr) + 1), "psnr": psnr.numpy()}).to_csv(
        tmp / "val_psnr_per_frame.csv", index=False)
    report.plot_psnr(psnr.tolist(), tmp / "val_psnr_per_frame.png",
                     f"validation PSNR per frame, trial {row['trial_id']} retrained")
    z = infer_z or run.config["infer_z"]
    videos = predict_tests(run.model, run.data, z, run.config["seed"], device)
    write_submission(tmp / "submission.csv", videos)
    write_gifs(tmp, videos)
    (tmp / "config.yaml").write_text(yaml.safe_dump(run.config, sort_keys=False))
    save_checkpoint(run.state(), tmp / "model.ckpt")
    values = [f["val_psnr"] for f in finals]
    summary = {"experiment": str(exp), "trial_id": str(row["trial_id"]), "searched": searched,
               "epochs": run.config["num_epoch"], "infer_z": z, "val_psnr": float(psnr.mean()),
               "val_psnr_600": float(psnr[:600].mean()),
               "seeds": {"n": seeds, "val_psnr": values, "mean": float(np.mean(values)),
                         "std": float(np.std(values, ddof=1)) if seeds > 1 else 0.0}}
    truth = data_root / "test_truth"
    if truth.is_dir():
        summary["score"] = score(tmp / "submission.csv", truth)
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out, summary
