"""The course's model and one training run, knowing nothing of Ray or Optuna.

    config        OPTIONS (the one table of run options, defaults = the template's), make_config, METRICS
    data          a LAB4-layout folder -> uint8 tensors (N, 3, 32, 64), checked, decoded once, cached
    synthetic     the built-in dataset (a procedural dancer in the LAB4 layout)
    model         the template's five modules; losses: the training objective; rollout: frame-by-frame videos
    schedules     KL annealing, teacher forcing, data fraction: pure functions of (epoch, config)
    steps         the training step a run's config and device call for, chosen once
    train         Run (one run's state), the epoch loop, validation; the `train` command
    checkpoint    what a checkpoint holds, written whole, read weights-only
    leaderboard   test rollouts, submission.csv, GIFs, the score: the one owner of the scored frames 1..600

The names below load their module on first use, so importing the package stays light. (The functions train and
rollout share their modules' names: import them from tune_cvae.lab.train and tune_cvae.lab.rollout.)
"""
import importlib

_HOMES = {"OPTIONS": "config", "METRICS": "config", "make_config": "config", "Lab4Data": "data",
          "DataError": "data", "load_dataset": "data", "generate": "synthetic", "resolve_data_dir": "synthetic",
          "CVAE": "model", "Run": "train", "validate": "train",
          "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "predict_tests": "leaderboard",
          "write_submission": "leaderboard", "score": "leaderboard"}
__all__ = sorted(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
