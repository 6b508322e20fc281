"""The library's command line, one light entry: `python -m tune_cvae train|report|score|synthetic|bench ...`.

Every command's flags are parsed here, before torch, pandas or Ray load, so `--help` and flag mistakes answer at
once; then the module that does the work is imported and its `main(args)` runs. run_search.py and run_best.py
take HelpFormatter and fail from here.
"""
import argparse
import importlib
import sys

from tune_cvae.bench.settings import (MORE_STRATEGIES, RACE_DATA, RACE_MODEL, RACE_PORTFOLIO, RACE_QUICK,
                                      RESCORE_SEEDS_FROM, SPEED_MODELS, STRATEGY_NAMES, TRAIN_SEEDS, describe)
from tune_cvae.bench.strategies import parts_of
from tune_cvae.common import UserError
from tune_cvae.lab.config import BUILTIN_SEED, BUILTIN_TRAIN_FRAMES, OPTIONS, UNSEEN_SEED


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends a flag's default to its help unless the help already names it, or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def fail(err):
    """Print a user error as one line and exit 2 (never a traceback for the user's mistakes)."""
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2)


def train_flags(p):
    p.add_argument("--DR", "--data", dest="data_dir", metavar="DIR", default=None,
                   help="LAB4-layout dataset folder (default: the built-in synthetic dataset)")
    p.add_argument("--save_root", default="runs/train", help="folder for checkpoints, metrics.jsonl, config.yaml")
    p.add_argument("--ckpt_path", default=None,
                   help="resume from this checkpoint (its config is used; the run continues to its num_epoch)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--per_save", type=int, default=1, help="keep a numbered checkpoint every N epochs")
    for key, (default, kind, help_) in OPTIONS.items():
        flag = f"--{key}"
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif kind is list:
            p.add_argument(flag, type=int, nargs="+", default=default, help=help_)
        elif isinstance(kind, list):
            p.add_argument(flag, choices=kind, default=default, help=help_)
        else:
            p.add_argument(flag, type=kind, default=default, help=help_)


def report_flags(p):
    p.add_argument("experiment", help="experiment folder (e.g. ray_results/kl_tfr-20261125-101500) or URI "
                                      "(s3://BUCKET/PATH/NAME?...: downloaded into a local copy, the report uploaded)")


def score_flags(p):
    p.add_argument("submission", help="submission.csv to score")
    p.add_argument("--truth", required=True, help="folder of true test frames: <i>/frame<N>.png (the built-in "
                                                  "data has them in test_truth/)")


def synthetic_flags(p):
    p.add_argument("out", help="folder to create (must not exist)")
    p.add_argument("--train-frames", type=int, default=BUILTIN_TRAIN_FRAMES, help="number of training frames")
    p.add_argument("--seed", type=int, default=BUILTIN_SEED, help="random seed: same seed, same dataset")
    p.add_argument("--tempo", type=float, default=1.0, help="how fast the dancers move (1.5: half as fast again, a "
                                                            "harder dataset)")


def portfolio_flags(p):
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="finished experiment folders of searches on "
                                                                        "other data (one per dataset)")
    p.add_argument("--k", type=int, default=6, help="configurations in the portfolio")
    p.add_argument("--out", default="portfolio.yaml", help="the portfolio file to write")
    p.add_argument("--space", default=None, help="the space the portfolio is for: only configurations that lie in "
                                                 "it are taken (default: the first experiment's space)")


def bench_flags(p):
    sub = p.add_subparsers(dest="bench", required=True)
    s = sub.add_parser("speed", help="training and rollout speed: the project's path against the template's loop",
                       formatter_class=HelpFormatter)
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    s.add_argument("--model", choices=list(SPEED_MODELS), default="template",
                   help="template: the template's sizes (F_dim 128, L_dim 32, N_dim 12, D_out_dim 192); small: "
                        + describe(SPEED_MODELS["small"]))
    s.add_argument("--data", default=None, help="LAB4-layout folder (default: the built-in dataset)")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    s.add_argument("--reps", type=int, default=5, help="timed rounds per figure (medians shown, and the range "
                                                            "of the rounds' ratios)")
    s.add_argument("--steps", type=int, default=None, help="optimiser steps per timed call (default: 20 on CUDA, "
                                                           "1 on CPU)")
    s.add_argument("--min-seconds", type=float, default=2.0, help="shortest timed repetition of training")
    s.add_argument("--json", default=None, help="also write the table and the facts to this JSON file")
    q = sub.add_parser("quality", help="winner vs default configuration vs repeating the first frame, unseen data",
                       formatter_class=HelpFormatter)
    q.add_argument("--seed", type=int, default=UNSEEN_SEED, help=f"seed of the generated dataset (the spaces "
                                                                  f"were tuned on {BUILTIN_SEED})")
    q.add_argument("--train-frames", type=int, default=None, help="training frames of that dataset (default: "
                                                                  "the built-in size)")
    q.add_argument("--out", default="bench_quality", help="folder for the dataset, the search and the scores")
    search_race_flags(sub.add_parser("search", formatter_class=HelpFormatter,
                                     help="search strategies raced at equal budget (trial-epochs) over seeds"))


def _strategies(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    try:
        for name in names:
            if name not in STRATEGY_NAMES + MORE_STRATEGIES:
                parts_of(name)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not names:
        raise argparse.ArgumentTypeError("name at least one strategy")
    return names


def _budgets(text):
    try:
        budgets = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: trial-epochs as integers, e.g. 32,128") from None
    if not budgets or min(budgets) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each budget must be at least 1")
    return budgets


def search_race_flags(r):
    r.add_argument("--data", action="append", default=None, metavar="DIR",
                   help="a LAB4-layout folder with test_truth/ (repeatable; default: the built-in datasets " +
                        ", ".join(RACE_DATA) + ", data the spaces and the portfolio were not tuned on)")
    r.add_argument("--out", default="bench_search", help="folder for the datasets, the searches and the tables "
                                                         "(which hold every search measured in it, earlier runs' too)")
    r.add_argument("--space", default="demo.yaml", help="the space whose values the strategies search (its start "
                                                        "points, prior and portfolio are the knowledge they use)")
    r.add_argument("--portfolio", default=None, metavar="FILE",
                   help=f"the configurations the portfolio rows try after the start points (a file `python -m "
                        f"tune_cvae portfolio` wrote; default: the space's `portfolio:`, else {RACE_PORTFOLIO})")
    r.add_argument("--pbt-space", default="demo_pbt.yaml", help="the space of the pbt strategy: its population "
                                                                "trains budget / num_samples epochs each")
    r.add_argument("--model", choices=["small", "space"], default="small",
                   help=f"small: {describe(RACE_MODEL)} (partial: the fraction of the training list per epoch; "
                        f"val_frames: of the validation video; sized for 2 CPU cores); space: the space's own")
    r.add_argument("--budgets", type=_budgets, default=[32, 128], metavar="B,B,...",
                   help="trial-epochs each search may spend, one race per budget (default: 32,128)")
    r.add_argument("--max-epochs", type=int, default=None, help="epochs of a full trial (default: the space's)")
    r.add_argument("--seeds", type=int, default=10, help="searches per strategy, dataset and budget (seeds 0..K-1, "
                                                         "the same for every strategy: paired)")
    r.add_argument("--strategies", type=_strategies, default=list(STRATEGY_NAMES), metavar="A,B,...",
                   help=f"which rows to race (default: {', '.join(STRATEGY_NAMES)}; also: "
                        f"{', '.join(MORE_STRATEGIES)}, or any SEARCHER+PARTS: bench/strategies.py)")
    r.add_argument("--train-seeds", type=int, default=TRAIN_SEEDS, metavar="K",
                   help=f"score each search's winner as a configuration: its values trained afresh with seeds "
                        f"{RESCORE_SEEDS_FROM}..{RESCORE_SEEDS_FROM}+K-1 (the same for every row), the test score "
                        f"their mean; the search's trials train with the search's seed. 0: every trial trains with "
                        f"seed 1 and the winner's own checkpoint is scored (races before this flag). A race "
                        f"continues only with the value it began with (default: {TRAIN_SEEDS})")
    r.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray session (default: all); each "
                                                          "trial holds one")
    r.add_argument("--quick", action="store_true", help=f"tiny settings for a test: {describe(RACE_QUICK)}, one "
                                                        f"dataset")


# command: (what it does, its flags, the module whose main(args) runs it, the flags that must be >= 1); `bench`'s
# module is chosen by its sub-command (BENCH_MODULES)
COMMANDS = {
    "train": ("one training run with the template's flag names; the last stdout line is its final metrics as JSON",
              train_flags, "tune_cvae.lab.train", ("--per_save",)),
    "report": ("the trial tables and report/index.html of an experiment folder (also while its search runs)",
               report_flags, "tune_cvae.experiment.report", ()),
    "score": ("the leaderboard's score of a submission.csv: mean PSNR over frames 1..600 of each test video; "
              "public = videos 0-2, private = 3-4", score_flags, "tune_cvae.lab.leaderboard", ()),
    "synthetic": ("write the built-in dataset (a procedurally animated dancing figure) in the LAB4 layout",
                  synthetic_flags, "tune_cvae.lab.synthetic", ("--train-frames",)),
    "portfolio": ("a portfolio of configurations from earlier searches on other data, chosen greedily across their "
                  "datasets; a space names it (portfolio: FILE) and its search evaluates it first",
                  portfolio_flags, "tune_cvae.experiment.portfolio", ("--k",)),
    "bench": ("measured benchmarks: speed against the course's reference loop, quality on unseen data, search "
              "strategies at equal budget", bench_flags, None,
              ("--threads", "--reps", "--steps", "--max-epochs", "--seeds", "--cpus")),
}
BENCH_MODULES = {"speed": "tune_cvae.bench.speed", "quality": "tune_cvae.bench.quality",
                 "search": "tune_cvae.bench.race"}


def parser():
    p = argparse.ArgumentParser(prog="python -m tune_cvae", formatter_class=HelpFormatter,
                                description="The library's tools beside run_search.py and run_best.py: one "
                                            "training run, a search's report, the leaderboard's score, the "
                                            "built-in dataset, the benchmarks. COMMAND --help says more.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (what, flags, _, _) in COMMANDS.items():
        flags(sub.add_parser(name, help=what, description=what, formatter_class=HelpFormatter))
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    _, _, module, at_least_one = COMMANDS[args.command]
    module = module or BENCH_MODULES[args.bench]
    for flag in at_least_one:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None and value < 1:
            fail(f"{flag} {value}: must be at least 1")
    try:
        importlib.import_module(module).main(args)
    except UserError as e:
        fail(e)
