"""Turn a finished search into a leaderboard submission: retrain the winner, validate it, predict the 5 test
videos, write submission.csv, GIFs, the PSNR-per-frame plot, its config and checkpoint, and score it when the
data has test ground truth (the built-in data does).

    python run_best.py [--experiment ray_results/NAME] [--epochs N] [--set KEY=VALUE] [--seeds K]
"""
import argparse
import json
import signal
import sys

import yaml

from tune_cvae.cli import HelpFormatter, fail
from tune_cvae.common import UserError


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--experiment", default=None,
                   help="experiment of run_search.py: a folder or a URI STORAGE/NAME (default: the newest in "
                        "--storage)")
    p.add_argument("--storage", default="ray_results", help="where to look for the newest experiment (a folder or a "
                                                            "URI, as run_search.py --storage)")
    p.add_argument("--data", dest="data_dir", metavar="DIR", default=None,
                   help="dataset folder (default: the one the search used)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs to retrain (default: the space's retrain.epochs, else its max_epochs); the KL, "
                        "teacher-forcing and LR schedules are laid out over this length. The submission uses the "
                        "epoch with the best validation PSNR")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one config key of the winner for the retraining (repeatable), e.g. "
                        "--set lr_scheduler=cosine (on top of the space's retrain.set); the comparison with the "
                        "trial then says the config differs")
    p.add_argument("--from-checkpoint", action="store_true",
                   help="continue from the winner's best checkpoint instead of retraining from scratch")
    p.add_argument("--infer-z", choices=["prior", "zero"], default=None,
                   help="z for the test rollouts: drawn from N(0, I) or its mean (default: the winner's infer_z)")
    p.add_argument("--seeds", type=int, default=1,
                   help="retrain with this many seeds and report mean and std of val_psnr (the first is submitted)")
    p.add_argument("--out", default=None, help="output folder (default: EXPERIMENT/best, for a URI its local copy's, "
                                               "also uploaded beside the experiment): new, empty, or an earlier "
                                               "run_best.py output, which it replaces; any other folder is refused")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--wandb", nargs="?", const=True, default=None, metavar="PROJECT",
                   help="log the retraining as a Weights & Biases run beside the search's trials (its curves, the "
                        "PSNR per frame, the GIFs, the submission as an artifact), in PROJECT or else the "
                        "search's project (needs `make wandb`)")
    return p


def _overrides(items):
    """--set KEY=VALUE items -> {key: value}, values read as in a space file (numbers, booleans, lists)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set {item}: expected KEY=VALUE, e.g. --set lr_scheduler=cosine")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        fail("--seeds and --epochs must be at least 1")
    args.overrides = _overrides(args.overrides)
    from tune_cvae.experiment.best import run_best
    from tune_cvae.lab.leaderboard import format_score
    signal.signal(signal.SIGTERM, _terminated)
    try:
        out, summary = run_best(**vars(args))
    except UserError as e:
        fail(e)
    except KeyboardInterrupt:
        print("interrupted; any earlier output is unchanged", file=sys.stderr)
        raise SystemExit(130) from None
    seeds = summary["seeds"]
    print(f"val_psnr {summary['val_psnr']:.2f} dB (frames 1..600: {summary['val_psnr_600']:.2f}), "
          f"weights of epoch {summary['submitted_epoch']} of {summary['epochs']}"
          + (f"; over {seeds['n']} seeds {seeds['mean']:.2f} +- {seeds['std']:.2f} dB" if seeds["n"] > 1 else ""))
    if "score" in summary:
        print(format_score(summary["score"]))
    print(f"wrote {out}/: submission.csv, pred_seq<i>.gif, val_psnr_per_frame.csv/.png, config.yaml, "
          f"model.ckpt, summary.json")
    print(json.dumps({k: summary[k] for k in ("trial_id", "val_psnr", "val_psnr_600")}))


def _terminated(signum, frame):
    """SIGTERM (a scheduler's time limit, `timeout`) ends run_best.py as Ctrl-C does: the staging folder removed,
    any earlier output unchanged, exit status 143."""
    print("terminated (SIGTERM); any earlier output is unchanged", file=sys.stderr)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main()
