"""One training run of the Lab4 CVAE, driven by one config dict; also a CLI with the template's flag names.

    python -m tune_cvae.train --DR LAB4_Dataset --save_root runs/a --num_epoch 70

Per epoch: the teacher-forcing draw, beta, the data fraction, training steps with grad-norm clipping, the LR
step, then validation = the full rollout of the validation video (val_psnr over frames 1..T-1, val_psnr_600
over frames 1..600, the leaderboard's window). The last stdout line is a JSON object of the final metrics.
"""
import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from tune_cvae import UserError, fail
from tune_cvae import data as lab4
from tune_cvae.model import model_from_config, psnr_per_frame, rollout, training_step
from tune_cvae.schedules import data_fraction, kl_beta, teacher_forcing_ratio

# key: (default = the template's value, allowed values or type, help)
OPTIONS = {
    "num_epoch": (70, int, "epochs to train (also the length the KL schedule is laid out over)"),
    "batch_size": (2, int, "clips per optimiser step"),
    "lr": (1e-3, float, "learning rate"),
    "optim": ("Adam", ["Adam", "AdamW"], "optimiser"),
    "weight_decay": (0.0, float, "weight decay (AdamW's decoupled form with AdamW)"),
    "lr_scheduler": ("multistep", ["multistep", "cosine", "none"], "LR schedule, stepped per epoch"),
    "milestones": ([2, 5], list, "epochs at which multistep multiplies the LR by gamma"),
    "gamma": (0.1, float, "multistep's factor"),
    "grad_clip": (1.0, float, "max gradient norm (0 = no clipping)"),
    "kl_anneal_type": ("Cyclical", ["Cyclical", "Monotonic", "None"], "KL annealing schedule"),
    "kl_anneal_cycle": (10, int, "number of Cyclical ramps over num_epoch"),
    "kl_anneal_ratio": (1.0, float, "fraction of each cycle spent ramping up"),
    "kl_beta_max": (1.0, float, "ceiling of beta (the schedule's `stop`)"),
    "kl_reduction": ("sum_batch", ["sum_batch", "mean"], "KL as the template (sum / batch) or per-element mean"),
    "tfr": (1.0, float, "initial teacher-forcing ratio"),
    "tfr_sde": (10, int, "epoch from which the teacher-forcing ratio decays"),
    "tfr_d_step": (0.1, float, "decay of the teacher-forcing ratio per epoch"),
    "train_vi_len": (16, int, "frames per training clip"),
    "partial": (1.0, float, "fraction of the training list used"),
    "fast_train": (False, bool, "use fast_partial of the data for the first fast_train_epoch epochs"),
    "fast_partial": (0.4, float, "data fraction while fast training"),
    "fast_train_epoch": (5, int, "epochs of fast training"),
    "F_dim": (128, int, "frame feature channels"),
    "L_dim": (32, int, "pose feature channels"),
    "N_dim": (12, int, "latent channels"),
    "D_out_dim": (192, int, "Decoder_Fusion output channels"),
    "output_activation": ("sigmoid", ["sigmoid", "clamp", "none"], "what maps the Generator's output to [0, 1]"),
    "infer_z": ("prior", ["prior", "zero"], "z during validation rollouts: drawn from N(0, I), or its mean 0"),
    "shuffle": (True, bool, "shuffle the clips each epoch"),
    "seed": (1, int, "random seed (same config + seed = same metrics on the same machine)"),
}
DEFAULTS = {k: v[0] for k, v in OPTIONS.items()}
POSITIVE = {"num_epoch", "batch_size", "lr", "F_dim", "L_dim", "N_dim", "D_out_dim", "kl_anneal_cycle",
            "kl_anneal_ratio", "partial", "fast_partial"}
FRACTIONS = {"partial", "fast_partial", "kl_anneal_ratio"}


class ConfigError(UserError):
    pass


def make_config(overrides=None):
    """DEFAULTS updated with `overrides`, checked: every run (CLI, trial, retraining) goes through here."""
    config = dict(DEFAULTS)
    for key, value in (overrides or {}).items():
        if key not in OPTIONS:
            raise ConfigError(f"unknown config key {key!r} (known: {', '.join(OPTIONS)})")
        config[key] = value
    for key, (_, kind, _) in OPTIONS.items():
        config[key] = _check(key, config[key], kind)
    if config["F_dim"] % 8 or config["L_dim"] % 2 or config["D_out_dim"] % 8 or (config["F_dim"] + config["L_dim"] + config["N_dim"]) % 4:
        raise ConfigError("F_dim and D_out_dim must be multiples of 8, L_dim even, F_dim+L_dim+N_dim a multiple of 4")
    if config["train_vi_len"] < 2:
        raise ConfigError(f"train_vi_len={config['train_vi_len']}: must be >= 2")
    return config


def _check(key, value, kind):
    if isinstance(kind, list):
        if value not in kind:
            raise ConfigError(f"{key}={value!r}: must be one of {kind}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is list and not (isinstance(value, list) and all(isinstance(v, int) for v in value)):
        raise ConfigError(f"{key}={value!r}: must be a list of integers")
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r}: must be {kind.__name__}")
    if kind in (int, float) and not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{key}={value!r}: must be a finite number >= 0")
    if key in POSITIVE and value <= 0:
        raise ConfigError(f"{key}={value!r}: must be > 0")
    if key in FRACTIONS and value > 1:
        raise ConfigError(f"{key}={value!r}: must be in (0, 1]")
    return value


def _optimizer(model, config):
    cls = torch.optim.AdamW if config["optim"] == "AdamW" else torch.optim.Adam
    return cls(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])


def _scheduler(opt, config):
    if config["lr_scheduler"] == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=config["milestones"], gamma=config["gamma"])
    if config["lr_scheduler"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config["num_epoch"])
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)


def pick_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible to torch")
    return torch.device(name)


STRIP_FRAMES = (1, 10, 50, 150, 300, 600)


def validate(model, data, config, epoch):
    """Roll out the validation video from its first frame. Returns the PSNR of each frame 1..T-1 (float frames
    in [0, 1]) and an image strip (3, 2H, kW): predicted frames on top, true frames below."""
    gen = torch.Generator().manual_seed(config["seed"] * 100003 + epoch)  # own RNG: training's is untouched
    true = data.val_img.float() / 255
    pred = rollout(model, true[0], data.val_label.float() / 255, config["infer_z"], gen)
    picks = [i for i in STRIP_FRAMES if i < len(true)]
    strip = torch.cat([torch.cat(list(pred[picks]), dim=2), torch.cat(list(true[picks]), dim=2)], dim=1)
    return psnr_per_frame(pred[1:], true[1:]).cpu(), strip.clamp(0, 1).cpu()


def check_data(config, data):
    """Enough training clips for one batch in every epoch of this config? (before any work is spent)"""
    fraction = min(data_fraction(0, config), config["partial"])
    if len(data.clip_starts(config["train_vi_len"], fraction)) < config["batch_size"]:
        raise UserError(f"{data.root}: {data.train_img.shape[0]} training frames give fewer than batch_size="
                        f"{config['batch_size']} clips of train_vi_len={config['train_vi_len']} frames at a data "
                        f"fraction of {fraction}")


class Run:
    """Model, optimiser, LR schedule and RNGs of one run; `epoch` is the number of epochs finished."""

    def __init__(self, config, data, device="cpu"):
        self.config, self.device = make_config(config), torch.device(device)
        check_data(self.config, data)
        self.data = data.to(self.device)
        torch.manual_seed(self.config["seed"])
        self.model = model_from_config(self.config).to(self.device)
        self.opt = _optimizer(self.model, self.config)
        self.sched = _scheduler(self.opt, self.config)
        self.rng = random.Random(self.config["seed"])          # the per-epoch teacher-forcing draw
        self.shuffle_gen = torch.Generator().manual_seed(self.config["seed"])
        self.epoch, self.history = 0, []

    def state(self):
        """Everything needed to continue exactly where this run is."""
        return {"config": self.config, "epoch": self.epoch, "history": self.history,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "rng_python": self.rng.getstate(),
                "rng_shuffle": self.shuffle_gen.get_state(), "rng_torch": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def load_state(self, state):
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.rng.setstate(state["rng_python"])
        self.shuffle_gen.set_state(state["rng_shuffle"])
        torch.set_rng_state(state["rng_torch"])
        if state["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.epoch, self.history = state["epoch"], list(state["history"])

    def train_epoch(self, progress=False):
        """One epoch of training then validation; returns (and records) its metrics."""
        c, e = self.config, self.epoch
        teacher_forcing = self.rng.random() < teacher_forcing_ratio(e, c)
        beta = kl_beta(e, c)
        starts = self.data.clip_starts(c["train_vi_len"], data_fraction(e, c))
        if c["shuffle"]:
            starts = starts[torch.randperm(len(starts), generator=self.shuffle_gen)]
        n_batches = len(starts) // c["batch_size"]  # drop_last, as the template
        offsets = torch.arange(c["train_vi_len"])
        self.model.train()
        sums = {"loss": 0.0, "mse": 0.0, "kl": 0.0}
        lr = self.opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        bar = tqdm(range(n_batches), desc=f"epoch {e + 1}/{c['num_epoch']}", leave=False, disable=not progress,
                   unit="batch", file=sys.stderr)
        for b in bar:
            idx = (starts[b * c["batch_size"]:(b + 1) * c["batch_size"], None] + offsets).to(self.device)
            img = self.data.train_img[idx].float() / 255
            label = self.data.train_label[idx].float() / 255
            loss, mse, kl = training_step(self.model, img, label, beta, teacher_forcing, c["kl_reduction"])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {e + 1}: loss became {loss.item()}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if c["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c["grad_clip"])
            self.opt.step()
            for k, v in (("loss", loss), ("mse", mse), ("kl", kl)):
                sums[k] += v.item()
            bar.set_postfix(loss=f"{loss.item():.4g}", beta=f"{beta:.2f}", tf=int(teacher_forcing))
        train_s = time.perf_counter() - t0
        self.sched.step()
        psnr, self.val_strip = validate(self.model, self.data, c, e)
        self.epoch += 1
        metrics = {"epoch": self.epoch, **{k: v / max(n_batches, 1) for k, v in sums.items()},
                   "beta": beta, "tfr": teacher_forcing_ratio(e, c), "teacher_forcing": teacher_forcing, "lr": lr,
                   "val_psnr": psnr.mean().item(), "val_psnr_600": psnr[:600].mean().item(),
                   "train_frames_per_s": n_batches * c["batch_size"] * c["train_vi_len"] / max(train_s, 1e-9),
                   "epoch_s": time.perf_counter() - t0}
        self.history.append(metrics)
        return metrics


def train(config, data, device="cpu", state=None, on_epoch=None, progress=False):
    """Train to config['num_epoch'] (continuing from `state` if given); `on_epoch(metrics, run)` after each
    epoch. Returns (final metrics, with `diverged` set when the loss stopped being finite; the Run)."""
    run = Run(config, data, device)
    if state is not None:
        run.load_state(state)
    metrics = {}
    epochs = tqdm(total=run.config["num_epoch"], initial=run.epoch, desc="training", unit="epoch",
                  disable=not progress, file=sys.stderr)
    while run.epoch < run.config["num_epoch"]:
        try:
            metrics = run.train_epoch(progress)
        except FloatingPointError as err:
            print(f"diverged: {err}", file=sys.stderr)
            return {**(run.history[-1] if run.history else {}), "val_psnr": float("nan"),
                    "val_psnr_600": float("nan"), "diverged": True, "epoch": run.epoch}, run
        epochs.update(1)
        epochs.set_postfix(val_psnr=f"{metrics['val_psnr']:.2f}")
        if on_epoch is not None:
            on_epoch(metrics, run)
    epochs.close()
    best = max((h["val_psnr"] for h in run.history), default=None)
    return {**metrics, "diverged": False, "best_val_psnr": best}, run


def set_threads(n):
    """Torch intra-op threads (a trial gets as many as the CPUs it holds)."""
    torch.set_num_threads(max(1, int(n)))


def _parser():
    p = argparse.ArgumentParser(prog="python -m tune_cvae.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--DR", "--data", dest="data", default=None,
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
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.per_save < 1:
        fail(f"--per_save {args.per_save}: must be at least 1")
    from tune_cvae.synthetic import resolve_data
    try:
        state = None
        if args.ckpt_path:
            state = load_checkpoint(args.ckpt_path)
            config = state["config"]
            print(f"resuming {args.ckpt_path} at epoch {state['epoch']} with its saved config", file=sys.stderr)
        else:
            config = make_config({k: getattr(args, k) for k in OPTIONS})
        device = pick_device(args.device)
        data = lab4.load(resolve_data(args.data))
        save_root = Path(args.save_root)
        save_root.mkdir(parents=True, exist_ok=True)
        (save_root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

        def save(metrics, run):
            with open(save_root / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            save_checkpoint(run.state(), save_root / "last.ckpt")
            if run.epoch % args.per_save == 0:
                save_checkpoint(run.state(), save_root / f"epoch={run.epoch}.ckpt")

        final, _ = train(config, data, device, state, save, progress=True)
    except UserError as e:
        fail(e)
    print(json.dumps(final))


def save_checkpoint(state, path):
    """Atomic: a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, KeyError) as e:
        raise UserError(f"{path}: cannot read checkpoint ({e})") from None


if __name__ == "__main__":
    main()
