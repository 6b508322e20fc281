"""One training run: determinism, checkpoint-resume equivalence, the CLI's JSON line, quality vs a baseline."""
import json
import math
import subprocess
import sys

import pytest
import torch

from helpers import TINY
from tune_cvae.lab.rollout import psnr_per_frame
from tune_cvae.lab.config import make_config
from tune_cvae.lab.checkpoint import load_checkpoint, save_checkpoint
from tune_cvae.lab.train import make_lr_scheduler, train

# what demo.yaml evaluates first: learns the built-in data within a few CPU minutes
LEARNS = {**TINY, "batch_size": 4, "train_vi_len": 4, "partial": 1.0, "num_epoch": 4, "kl_anneal_type": "None",
          "tfr_sde": 1, "tfr_d_step": 0.5, "lr": 3e-3, "infer_z": "zero"}
QUICK = {**TINY, "num_epoch": 2, "partial": 0.15, "train_vi_len": 8, "tfr": 1.0, "tfr_sde": 1, "tfr_d_step": 1.0}


def test_same_config_and_seed_give_the_same_metrics(short_val):
    a, _ = train(QUICK, short_val)
    b, _ = train(QUICK, short_val)
    assert a["val_psnr"] == b["val_psnr"] and a["loss"] == b["loss"]
    c, _ = train({**QUICK, "seed": 2}, short_val)
    assert c["loss"] != a["loss"]


def test_resume_from_checkpoint_equals_uninterrupted_run(short_val, tmp_path):
    whole, _ = train(QUICK, short_val)
    saved = {}

    def keep_first(metrics, run):
        if run.epoch == 1:
            save_checkpoint(run.state(), tmp_path / "e1.ckpt")
            saved["done"] = True

    train(QUICK, short_val, on_epoch=keep_first)
    assert saved
    resumed, _ = train(QUICK, short_val, state=load_checkpoint(tmp_path / "e1.ckpt"))
    for key in ("epoch", "loss", "mse", "kl", "val_psnr", "val_psnr_600", "tfr", "lr", "teacher_forcing"):
        assert resumed[key] == whole[key], key


def test_metrics_recorded_each_epoch(short_val):
    seen = []
    final, _ = train({**QUICK, "kl_anneal_type": "None", "kl_beta_max": 0.5}, short_val,
                  on_epoch=lambda m, run: seen.append(m))
    assert [m["epoch"] for m in seen] == [1, 2]
    assert {"loss", "mse", "kl", "beta", "tfr", "lr", "val_psnr", "val_psnr_600", "train_frames_per_s"} <= set(final)
    assert [m["tfr"] for m in seen] == [1.0, 0.0] and seen[0]["beta"] == 0.5


@pytest.mark.slow
def test_short_run_beats_repeating_the_first_frame(builtin):
    """A few minutes of CPU training on the built-in data must already beat the trivial predictor over the
    full 630-frame validation rollout."""
    val = builtin.val_img.float() / 255
    baseline = psnr_per_frame(val[:1].expand_as(val)[1:], val[1:]).mean().item()
    final, _ = train(LEARNS, builtin)
    assert final["val_psnr"] > baseline + 0.5, (final["val_psnr"], baseline)


@pytest.mark.slow
def test_cli_prints_the_final_metrics_as_its_last_line(builtin_root, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tune_cvae", "train", "--DR", str(builtin_root), "--save_root", str(tmp_path / "run"),
         "--num_epoch", "1", "--partial", "0.1", "--F_dim", "32", "--L_dim", "8", "--N_dim", "4",
         "--D_out_dim", "32"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["epoch"] == 1 and {"val_psnr", "val_psnr_600", "train_frames_per_s"} <= set(final)
    assert (tmp_path / "run/last.ckpt").is_file() and (tmp_path / "run/config.yaml").is_file()
    state = load_checkpoint(tmp_path / "run/last.ckpt")
    assert state["epoch"] == 1 and state["config"]["F_dim"] == 32


def test_optim_step_frame_steps_after_every_predicted_frame(short_val):
    config = {**QUICK, "num_epoch": 1, "optim_step": "frame"}
    final, run = train(config, short_val)
    n_batches = len(short_val.clip_starts(config["train_vi_len"], config["partial"])) // config["batch_size"]
    steps = {int(s["step"]) for s in run.opt.state.values()}
    assert steps == {n_batches * (config["train_vi_len"] - 1)} and math.isfinite(final["loss"])


def test_multistep_scaled_divides_the_lr_at_half_and_three_quarters():
    config = make_config({"num_epoch": 8, "lr": 1e-3, "lr_scheduler": "multistep_scaled", "gamma": 0.1})
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config["lr"])
    sched = make_lr_scheduler(opt, config)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-3] * 4 + [1e-4] * 2 + [1e-5] * 2)
