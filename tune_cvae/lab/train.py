"""One training run of the Lab4 CVAE, driven by one config dict; also the `train` command, with the template's
flag names:

    python -m tune_cvae train --DR LAB4_Dataset --save_root runs/a --num_epoch 70

Per epoch: the teacher-forcing draw, beta, the data fraction, training steps with grad-norm clipping, the LR
step, then validation = the full rollout of the validation video (val_psnr over frames 1..T-1, val_psnr_600
over the leaderboard's frames 1..600). The command's last stdout line is a JSON object of the final metrics.
"""
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from tune_cvae.common import UserError, say
from tune_cvae.lab.checkpoint import STATE, load_checkpoint, resume_data_dir, save_checkpoint
from tune_cvae.lab.config import METRICS, OPTIONS, make_config
from tune_cvae.lab.data import load_dataset
from tune_cvae.lab.leaderboard import scored_mean
from tune_cvae.lab.model import channels_last, model_from_config
from tune_cvae.lab.rollout import next_frame, psnr_per_frame, rollout
from tune_cvae.lab.schedules import data_fraction, kl_beta, teacher_forcing_ratio
from tune_cvae.lab.steps import choose_step, compiled, keep_freed_memory


def _optimizer(model, config):
    """Adam(W) with its fused kernel: one call updates every parameter (the loop's update up to rounding)."""
    cls = torch.optim.AdamW if config["optim"] == "AdamW" else torch.optim.Adam
    return cls(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"], fused=True)


def make_lr_scheduler(opt, config):
    if config["lr_scheduler"] in ("multistep", "multistep_scaled"):
        n = config["num_epoch"]
        milestones = config["milestones"] if config["lr_scheduler"] == "multistep" else [n // 2, (3 * n) // 4]
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=config["gamma"])
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
CHECK_EVERY = 20  # batches between the divergence checks (each waits for the device)


def validation_seed(config, epoch):
    """The seed of the validation rollout of the weights after `epoch` epochs (its own generator: training's RNG
    stays untouched, and run_best re-validates the submitted weights with the same z)."""
    return config["seed"] * 100003 + epoch - 1


def validate(run, epoch: int, frames: int | None = None):
    """Roll out the validation video from its first frame with the weights after `epoch` epochs: its first
    `frames` frames (default: the config's val_frames; 0: all of them). Returns the PSNR in dB of each frame
    1..T-1, (T-1,), and an image strip (3, 2*32, k*64) in [0, 1]: the predicted frames STRIP_FRAMES on top, the
    true ones below."""
    dataset, frames = run.dataset, run.config["val_frames"] if frames is None else frames
    gen = torch.Generator(run.device).manual_seed(validation_seed(run.config, epoch))
    length = min(frames or len(dataset.val_img), len(dataset.val_img))
    true = dataset.val_img[:length].float() / 255
    pred = run.rollout(true[0], dataset.val_label[:length].float() / 255, run.config["infer_z"], gen)
    picks = [i for i in STRIP_FRAMES if i < len(true)]
    strip = torch.cat([torch.cat(list(pred[picks]), dim=2), torch.cat(list(true[picks]), dim=2)], dim=1)
    return psnr_per_frame(pred[1:], true[1:]).cpu(), strip.clamp(0, 1).cpu()


def check_dataset(config, dataset):
    """Enough training clips for one batch in every epoch of this config? (before any work is spent)"""
    fraction = min(data_fraction(0, config), config["partial"])
    if len(dataset.clip_starts(config["train_vi_len"], fraction)) < config["batch_size"]:
        raise UserError(f"{dataset.root}: {dataset.train_img.shape[0]} training frames give fewer than batch_size="
                        f"{config['batch_size']} clips of train_vi_len={config['train_vi_len']} frames at a data "
                        f"fraction of {fraction}")


class Run:
    """The state of one run: config, data on the device, model, optimiser, LR schedule, RNGs, the epochs finished
    (`epoch`) and their metrics, and the training step its config and device call for (steps.choose_step).
    state() / load_state() go by checkpoint.STATE."""

    def __init__(self, config, dataset, device="cpu"):
        self.config, self.device = make_config(config), torch.device(device)
        check_dataset(self.config, dataset)
        if self.device.type == "cpu":
            keep_freed_memory()  # a process-wide malloc setting, which CPU steps measured faster with
        self.dataset = dataset.to(self.device)
        torch.manual_seed(self.config["seed"])
        self.model = model_from_config(self.config).to(self.device)
        if self.device.type == "cpu":  # the layout whose steps measured faster there (docs/PERFORMANCE.md)
            channels_last(self.model)
        self.opt = _optimizer(self.model, self.config)
        self.sched = make_lr_scheduler(self.opt, self.config)
        self.rng = random.Random(self.config["seed"])          # the per-epoch teacher-forcing draw
        self.shuffle_gen = torch.Generator().manual_seed(self.config["seed"])
        self.epoch, self.history, self.name = 0, [], ""  # name: who trains it (a trial id), recorded per epoch
        self.val_strip = self.val_psnr = None  # the last validation's image strip and PSNR per frame
        self.train_step = choose_step(self)
        self.frame_fn = compiled(next_frame, self.config, self.device) if self.config["compile"] else None

    def state(self):
        """Everything needed to continue exactly where this run is."""
        return {key: read(self) for key, (read, _) in STATE.items()}

    def load_state(self, state):
        """Continue from `state`. Without an LR schedule the lr is this run's config value, not the optimiser
        state's: under PBT the state is another trial's and the config carries the perturbed lr."""
        try:
            for key, (_, write) in STATE.items():
                if write is not None:
                    write(self, state[key])
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise UserError(f"the checkpoint does not fit its own config ({str(e).splitlines()[0][:160]})") from None
        if self.config["lr_scheduler"] == "none":
            hold(self, {"lr": self.config["lr"]})

    def autocast(self):
        """bf16 autocast with precision 'bf16' (weights, optimiser state and losses stay float32)."""
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.config["precision"] == "bf16")

    def rollout(self, first_frame, labels, infer_z, generator):
        """model.rollout with this run's precision and (compiled) frame step; frames come back float32."""
        with self.autocast():
            return rollout(self.model, first_frame, labels, infer_z, generator, frame_fn=self.frame_fn).float()


def hold(run, values):
    """From the next epoch on, train with `values` of SETTABLE keys: in the config (what kl_beta and
    teacher_forcing_ratio read) and, for lr, in the optimiser and as the LR schedule's base (so that no
    schedule step brings the old value back)."""
    run.config.update(values)
    if "lr" in values:
        for group in run.opt.param_groups:
            group["lr"] = group["initial_lr"] = values["lr"]
        run.sched.base_lrs = [values["lr"]] * len(run.opt.param_groups)


def train_steps(run, batches, beta, teacher_forcing, bar=None):
    """The run's training step over `batches` (B clip starts per row). Returns the sums of (loss, mse, kl) on the
    device, the number of optimiser steps and the first step's mse (the weights the epoch started from: under PBT,
    the evidence that an exploiting trial trains its donor's); the host waits for the device only every
    CHECK_EVERY batches."""
    offsets = torch.arange(run.config["train_vi_len"], device=run.device)
    beta_t = torch.tensor(beta, device=run.device)  # a tensor: a compiled step does not recompile per value
    run.model.train()
    sums, n_steps, first = torch.zeros(3, device=run.device), 0, None
    for b, starts in enumerate(batches.to(run.device)):
        idx = starts[:, None] + offsets
        img = run.dataset.train_img[idx].float() / 255
        label = run.dataset.train_label[idx].float() / 255
        for losses in run.train_step(img, label, beta_t, teacher_forcing):
            sums += torch.stack(losses).detach().float()
            first = sums[1].clone() if first is None else first
            n_steps += 1
        if bar is not None:
            bar.update(1)
        if (b + 1) % CHECK_EVERY == 0 or b + 1 == len(batches):
            mean = (sums / n_steps).tolist()
            if not math.isfinite(mean[0]):
                raise FloatingPointError(f"epoch {run.epoch + 1}: the loss became {mean[0]} by batch {b + 1}")
            if bar is not None:
                bar.set_postfix(loss=f"{mean[0]:.4g}", beta=f"{beta:.2f}", tf=int(teacher_forcing))
    return sums, n_steps, first


def epoch_batches(run, epoch):
    """The clip starts of epoch `epoch` (0-based) as (batches, batch_size): its data fraction, shuffled with the
    run's generator, the last incomplete batch dropped (as the template)."""
    config = run.config
    starts = run.dataset.clip_starts(config["train_vi_len"], data_fraction(epoch, config))
    if config["shuffle"]:
        starts = starts[torch.randperm(len(starts), generator=run.shuffle_gen)]
    n_batches = len(starts) // config["batch_size"]
    return starts[:n_batches * config["batch_size"]].view(n_batches, config["batch_size"])


def train_epoch(run, progress=False):
    """One epoch of training then validation; returns (and records in run.history) its metrics."""
    config, epoch = run.config, run.epoch
    teacher_forcing = run.rng.random() < teacher_forcing_ratio(epoch, config)
    beta = kl_beta(epoch, config)
    batches = epoch_batches(run, epoch)
    lr = run.opt.param_groups[0]["lr"]
    t0 = time.perf_counter()
    with tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{config['num_epoch']}", leave=False,
              disable=not progress, unit="batch", file=sys.stderr) as bar:
        sums, n_steps, first_mse = train_steps(run, batches, beta, teacher_forcing, bar)
    train_s = time.perf_counter() - t0
    run.sched.step()
    run.epoch += 1
    run.val_psnr, run.val_strip = validate(run, run.epoch)
    loss, mse, kl = (sums / max(n_steps, 1)).tolist()
    metrics = {"epoch": run.epoch, "loss": loss, "mse": mse, "kl": kl,
               "beta": beta, "tfr": teacher_forcing_ratio(epoch, config), "teacher_forcing": teacher_forcing,
               "lr": lr, "val_psnr": run.val_psnr.mean().item(), "val_psnr_600": scored_mean(run.val_psnr),
               "train_frames_per_s": batches.numel() * config["train_vi_len"] / max(train_s, 1e-9),
               "epoch_s": time.perf_counter() - t0, "threads": torch.get_num_threads(),
               "first_mse": float("nan") if first_mse is None else first_mse.item(), "trained_by": run.name}
    run.history.append(metrics)
    return metrics


def train(config: dict, dataset, device="cpu", state=None, on_epoch=None, progress=False, schedule=None, name=""):
    """Train to config['num_epoch']; returns (the final metrics, with `diverged` set when the loss stopped being
    finite; the Run).

    Args:
        config: the run's config (make_config checks it); dataset: a data.Lab4Data.
        state: a checkpoint's state to continue from (checkpoint.load_checkpoint), or None.
        on_epoch: called as on_epoch(metrics, run) after each epoch.
        schedule: per epoch, the SETTABLE values to train it with (a PBT trial's replay; past its end the last).
        name: who trains each epoch (its `trained_by`: a PBT trial's lineage).
    """
    run = Run(config, dataset, device)
    run.name = name
    if state is not None:
        run.load_state(state)
    metrics = {}
    epochs = tqdm(total=run.config["num_epoch"], initial=run.epoch, desc="training", unit="epoch",
                  disable=not progress, file=sys.stderr)
    while run.epoch < run.config["num_epoch"]:
        if schedule:
            hold(run, schedule[min(run.epoch, len(schedule) - 1)])
        try:
            metrics = train_epoch(run, progress)
        except FloatingPointError as err:
            say(f"diverged: {err}")
            nan = {key: float("nan") for key in (*METRICS, "kl")}  # a search ranking by any metric goes on
            return {**(run.history[-1] if run.history else {}), **nan, "diverged": True, "epoch": run.epoch}, run
        epochs.update(1)
        epochs.set_postfix(val_psnr=f"{metrics['val_psnr']:.2f}")
        if on_epoch is not None:
            on_epoch(metrics, run)
    epochs.close()
    best = max((h["val_psnr"] for h in run.history), default=None)
    return {**metrics, "diverged": False, "best_val_psnr": best}, run


def main(args):
    """`python -m tune_cvae train` (flags: cli.train_flags)."""
    from tune_cvae.lab.synthetic import resolve_data_dir
    state = None
    if args.ckpt_path:
        state = load_checkpoint(args.ckpt_path)
        config = state["config"]
        data_dir = resume_data_dir(state, args.data_dir)
        say(f"resuming {args.ckpt_path} at epoch {state['epoch']} with its saved config, data {data_dir}")
    else:
        config = make_config({k: getattr(args, k) for k in OPTIONS})
        data_dir = resolve_data_dir(args.data_dir)
    device = pick_device(args.device)
    dataset = load_dataset(data_dir)
    save_root = Path(args.save_root)
    save_root.mkdir(parents=True, exist_ok=True)
    (save_root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def save(metrics, run):
        with open(save_root / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        save_checkpoint(run.state(), save_root / "last.ckpt")
        if run.epoch % args.per_save == 0:
            save_checkpoint(run.state(), save_root / f"epoch={run.epoch}.ckpt")

    final, _ = train(config, dataset, device, state, save, progress=True)
    say(json.dumps(final), result=True)


def cpu_frames_per_s(config, dataset, threads):
    """Training frames per second of `config` on this machine's CPU with `threads` torch threads: one teacher-forced
    batch timed after a warm-up batch (the duration warning before a search on CPUs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = Run({**config, "partial": 1.0, "fast_train": False}, dataset)
        batches = epoch_batches(run, 0)[:2]  # check_dataset made sure of one at least
        train_steps(run, batches[:1], 0.0, True)
        t0 = time.perf_counter()
        train_steps(run, batches[-1:], 0.0, True)
        return batches[-1].numel() * config["train_vi_len"] / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
