"""Helpers the tests share: a tiny model config, a writer of small LAB4-layout folders, a fake experiment."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tune_cvae.experiment.record import Search, write_search
from tune_cvae.experiment.space import PBT_FIXED
from tune_cvae.experiment.space_yaml import parse

# small enough for CPU tests; bottleneck channels (F_dim/8 = 4) still carry colour
TINY = {"F_dim": 32, "L_dim": 8, "N_dim": 4, "D_out_dim": 32, "batch_size": 2, "lr_scheduler": "none"}


# a small valid space: a conditional parameter, a log-scaled one, a start point
GOOD = {
    "metric": "val_psnr", "mode": "max", "num_samples": 4, "max_epochs": 6, "grace_period": 1,
    "fixed": {"F_dim": 32},
    "params": {
        "kl_anneal_type": {"type": "categorical", "choices": ["Cyclical", "Monotonic", "None"]},
        "kl_anneal_cycle": {"type": "int", "low": 1, "high": 5, "when": {"kl_anneal_type": "Cyclical"}},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    },
    "points_to_evaluate": [{"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 2, "lr": 1e-3}],
}


def read_trials(path, **kwargs):
    """trials.csv with its trial ids as text: Ray's ids are hex, and one of only digits
    (69251124) would otherwise read as a number."""
    return pd.read_csv(path, dtype={"trial_id": str}, **kwargs)


def write_lab4(root, size=(16, 32), n_train=40, n_val=4, n_test=1, test_len=630, seed=0):
    """A minimal valid LAB4-layout folder of random images of any on-disk size (H, W)."""
    rng = np.random.default_rng(seed)
    root = Path(root)

    def img(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, compress_level=0)

    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            img(root / f"{split}/{split}_img/frame{i}.png")
            img(root / f"{split}/{split}_label/frame{i}.png")
    for v in range(n_test):
        img(root / f"test/test_img/{v}/frame0.png")
        for i in range(test_len):
            img(root / f"test/test_label/{v}/frame{i}.png")
    return root


def make_experiment(root):
    """An experiment folder as a search leaves it (search.yaml, trial folders with params and results), no Ray:
    a1 finished, b2 stopped early, c3 went NaN after the best value, d4 errored."""
    space = parse({"metric": "val_psnr", "mode": "max", "max_epochs": 3, "num_samples": 4, "params": {
        "kl_anneal_type": {"type": "categorical", "choices": ["Cyclical", "Monotonic", "None"]},
        "kl_anneal_cycle": {"type": "int", "low": 1, "high": 3, "when": {"kl_anneal_type": "Cyclical"}},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}, "test.yaml")
    root.mkdir(parents=True, exist_ok=True)
    write_search(root, Search(space, "/nowhere", 0, {"cpu": 1, "gpu": 0}))
    trials = {
        "a1": ({"kl_anneal_type": "None", "lr": 0.001, "num_epoch": 3}, [20.0, 21.0, 22.5], False),
        "b2": ({"kl_anneal_type": "Monotonic", "lr": 0.002, "num_epoch": 3}, [19.0], False),
        "c3": ({"kl_anneal_type": "None", "lr": 0.003, "num_epoch": 3}, [23.0, float("nan")], False),
        "d4": ({"kl_anneal_type": "Monotonic", "lr": 0.004, "num_epoch": 3}, [], True),
    }
    for tid, (config, psnrs, errored) in trials.items():
        d = root / f"trial_{tid}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps(config))
        lines = [json.dumps({"trial_id": tid, "epoch": i + 1, "val_psnr": v, "val_psnr_600": v,
                             "time_total_s": 10.0 * (i + 1)}) for i, v in enumerate(psnrs)]
        (d / "result.json").write_text("\n".join(lines) + "\n")
        if errored:
            (d / "error.txt").write_text("boom")
    return root


PBT_QUICK = {**TINY, "train_vi_len": 3, "partial": 0.05, "optim_step": "frame", **PBT_FIXED}
A = {"kl_beta_max": 0.01, "tfr": 1.0, "lr": 2e-3}
B = {"kl_beta_max": 0.5, "tfr": 0.0, "lr": 4e-4}  # what an exploit's perturbation might give


def pbt_space(**changes):
    """A tiny PBT space: a population of 2, an exploit after every epoch (the worse takes the better's weights)."""
    raw = {"scheduler": "pbt", "num_samples": 2, "max_epochs": 3, "metric": "val_psnr",
           "pbt": {"interval": 1, "quantile": 0.5, "resample_probability": 0.0},
           "fixed": {**{k: v for k, v in PBT_QUICK.items() if k not in PBT_FIXED}, "batch_size": 2, "infer_z": "zero"},
           "params": {"kl_beta_max": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
                      "tfr": {"type": "float", "low": 0.0, "high": 1.0},
                      "lr": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True}}}
    raw.update(changes)
    return raw
