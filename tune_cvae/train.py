"""One training run of the Lab4 CVAE, driven by one config dict; also a CLI with the template's flag names.

    python -m tune_cvae train --DR LAB4_Dataset --save_root runs/a --num_epoch 70

Per epoch: the teacher-forcing draw, beta, the data fraction, training steps with grad-norm clipping, the LR
step, then validation = the full rollout of the validation video (val_psnr over frames 1..T-1, val_psnr_600
over frames 1..600, the leaderboard's window). The last stdout line is a JSON object of the final metrics.
"""
import ctypes
import json
import math
import random
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from tune_cvae import UserError, cli, say
from tune_cvae.config import OPTIONS, make_config
from tune_cvae.data import load_dataset
from tune_cvae.model import (channels_last, cpu_chunk, cpu_parts, frame_step, model_from_config,
                             next_frame, pose_features, posterior_noise, psnr_per_frame, rollout, training_step)
from tune_cvae.schedules import data_fraction, kl_beta, teacher_forcing_ratio


def _optimizer(model, config):
    """Adam(W) with its fused kernel, one call for all parameters (clipping and the step: 2.9 instead of 8.8 ms for
    the small model's 206 tensors on 2 CPU threads, docs/PERFORMANCE.md; the same update up to rounding)."""
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


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory in the process (no mmap per block, no trimming). By default it gives
    each large activation back to the OS when freed, so every CPU training step faults its pages in again: about
    40,000 page faults per small-model step, 10-12 % of its time on the dev VM (docs/PERFORMANCE.md). The
    process keeps its peak memory instead. Off glibc (no mallopt) nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4  # glibc's <malloc.h>
    for option, value in ((m_mmap_max, 0), (m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20)):
        mallopt(option, value)


STRIP_FRAMES = (1, 10, 50, 150, 300, 600)
CHECK_EVERY = 20  # batches between the divergence checks (each waits for the device)


def validate(run, epoch):
    """Roll out the validation video from its first frame. Returns the PSNR of each frame 1..T-1 (float frames
    in [0, 1]) and an image strip (3, 2H, kW): predicted frames on top, true frames below."""
    dataset = run.dataset
    gen = torch.Generator(run.device).manual_seed(run.config["seed"] * 100003 + epoch)  # training's RNG untouched
    true = dataset.val_img.float() / 255
    pred = run.rollout(true[0], dataset.val_label.float() / 255, run.config["infer_z"], gen)
    picks = [i for i in STRIP_FRAMES if i < len(true)]
    strip = torch.cat([torch.cat(list(pred[picks]), dim=2), torch.cat(list(true[picks]), dim=2)], dim=1)
    return psnr_per_frame(pred[1:], true[1:]).cpu(), strip.clamp(0, 1).cpu()


def compiled(fn, config, device):
    """fn itself, or with config['compile'] its torch.compile'd copy (on CUDA in 'reduce-overhead' mode: the
    step replayed as CUDA graphs, since launching many small kernels, not arithmetic, bounds a batch of 2)."""
    if not config["compile"]:
        return fn
    return torch.compile(fn, mode="reduce-overhead" if device.type == "cuda" else "default")


def check_dataset(config, dataset):
    """Enough training clips for one batch in every epoch of this config? (before any work is spent)"""
    fraction = min(data_fraction(0, config), config["partial"])
    if len(dataset.clip_starts(config["train_vi_len"], fraction)) < config["batch_size"]:
        raise UserError(f"{dataset.root}: {dataset.train_img.shape[0]} training frames give fewer than batch_size="
                        f"{config['batch_size']} clips of train_vi_len={config['train_vi_len']} frames at a data "
                        f"fraction of {fraction}")


class Run:
    """Model, optimiser, LR schedule and RNGs of one run; `epoch` is the number of epochs finished."""

    def __init__(self, config, dataset, device="cpu"):
        self.config, self.device = make_config(config), torch.device(device)
        check_dataset(self.config, dataset)
        self.dataset = dataset.to(self.device)
        torch.manual_seed(self.config["seed"])
        self.model = model_from_config(self.config).to(self.device)
        if self.device.type == "cpu":  # teacher-forced steps 1.11-1.25x faster (docs/PERFORMANCE.md)
            channels_last(self.model)
        self.opt = _optimizer(self.model, self.config)
        self.sched = make_lr_scheduler(self.opt, self.config)
        self.step_fn = compiled(training_step, self.config, self.device)
        self.chunk = cpu_chunk(self.config) if self.device.type == "cpu" else None
        if self.device.type == "cpu":
            keep_freed_memory()
        self.parts = cpu_parts(self.config) if self.device.type == "cpu" else 1
        self.pool = None  # split_backward's threads; torch.set_num_threads there also sets MKL's process-wide
        if self.parts > 1:  # count, while this thread keeps its own OpenMP count for its convolutions
            self.pool = ThreadPoolExecutor(self.parts, initializer=torch.set_num_threads,
                                           initargs=(max(1, torch.get_num_threads() // self.parts),))
        self.frame_fn = compiled(next_frame, self.config, self.device) if self.config["compile"] else None
        self.rng = random.Random(self.config["seed"])          # the per-epoch teacher-forcing draw
        self.shuffle_gen = torch.Generator().manual_seed(self.config["seed"])
        self.epoch, self.history = 0, []
        self.val_strip = self.val_psnr = None  # the last validation's image strip and PSNR per frame

    def state(self):
        """Everything needed to continue exactly where this run is."""
        return {"config": self.config, "data_dir": self.dataset.root, "epoch": self.epoch, "history": self.history,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "rng_python": self.rng.getstate(),
                "rng_shuffle": self.shuffle_gen.get_state(), "rng_torch": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def load_state(self, state):
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.rng.setstate(tuple(state["rng_python"]))
            self.shuffle_gen.set_state(state["rng_shuffle"])
            torch.set_rng_state(state["rng_torch"])
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise UserError(f"the checkpoint does not fit its own config ({str(e).splitlines()[0][:160]})") from None
        if state["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.epoch, self.history = state["epoch"], list(state["history"])

    def autocast(self):
        """bf16 autocast with precision 'bf16' (weights, optimiser state and losses stay float32)."""
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.config["precision"] == "bf16")

    def rollout(self, first_frame, labels, infer_z, generator):
        """model.rollout with this run's precision and (compiled) frame step; frames come back float32."""
        with self.autocast():
            return rollout(self.model, first_frame, labels, infer_z, generator, step=self.frame_fn).float()

    def step(self, loss):
        """One optimiser step on `loss`."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.update()

    def update(self):
        """The optimiser step on the gradients there, clipped as configured. No host sync: a non-finite loss is
        caught by train_steps a few steps later, and the run stops as diverged."""
        if self.config["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config["grad_clip"])
        self.opt.step()

    def train_batch(self, img, label, beta, teacher_forcing):
        """Clips (B, T, 3, H, W) -> [(loss, mse, kl)] of each optimiser step: one per batch (optim_step 'clip'),
        or one per predicted frame ('frame', fed the true or its own detached previous frame)."""
        c = self.config
        if c["optim_step"] == "clip":
            eps = posterior_noise(self.model, img)
            if self.pool is not None:
                self.opt.zero_grad(set_to_none=True)
                losses = self.split_backward(img, label, beta, teacher_forcing, eps)
                self.update()
                return [losses]
            if self.config["compile"]:
                torch.compiler.cudagraph_mark_step_begin()  # a new training iteration for CUDA-graph replays
            with self.autocast():
                losses = self.step_fn(self.model, img, label, beta, teacher_forcing, c["kl_reduction"], eps,
                                      self.chunk)
            self.step(losses[0])
            return [losses]
        out, prev = [], img[:, 0]
        for t in range(1, img.shape[1]):
            with self.autocast():
                loss, mse, kl, pred = frame_step(self.model, prev, img[:, t], label[:, t], beta, c["kl_reduction"])
            self.step(loss)
            out.append((loss, mse, kl))
            prev = img[:, t] if teacher_forcing else pred.detach()
        return out

    def split_backward(self, img, label, beta, teacher_forcing, eps):
        """training_step's loss and gradients with the batch's clips split over self.parts threads, each part's
        forward and backward on its own thread with its share of the torch threads: on a CPU one op over a few
        frames keeps only part of the cores busy. The pose encoder runs once over the whole batch (BatchNorm
        statistics) and takes its gradient after the parts. Returns the batch's (loss, mse, kl), detached."""
        B, T = img.shape[:2]
        with self.autocast():
            label_feat = pose_features(self.model, label)
        leaf, eps = label_feat.detach().requires_grad_(), eps.unflatten(0, (B, T - 1))

        def part(rows):
            with self.autocast():
                losses = training_step(self.model, img[rows], None, beta, teacher_forcing,
                                       self.config["kl_reduction"], eps[rows].flatten(0, 1), self.chunk, leaf[rows],
                                       len(rows) / B)
            losses[0].backward()
            return torch.stack(losses).detach()

        futures = [self.pool.submit(part, rows) for rows in torch.arange(B, device=img.device).tensor_split(self.parts)]
        total = sum(f.result() for f in futures)
        label_feat.backward(leaf.grad)
        return tuple(total)

    def train_steps(self, batches, beta, teacher_forcing, bar=None):
        """Optimiser steps over `batches` (B clip starts per row). Returns the sums of (loss, mse, kl) on the
        device and the number of steps; the host waits for the device only every CHECK_EVERY batches."""
        c = self.config
        offsets = torch.arange(c["train_vi_len"], device=self.device)
        beta_t = torch.tensor(beta, device=self.device)  # a tensor: a compiled step does not recompile per value
        self.model.train()
        sums, n_steps = torch.zeros(3, device=self.device), 0
        for b, starts in enumerate(batches.to(self.device)):
            idx = starts[:, None] + offsets
            img = self.dataset.train_img[idx].float() / 255
            label = self.dataset.train_label[idx].float() / 255
            for losses in self.train_batch(img, label, beta_t, teacher_forcing):
                sums += torch.stack(losses).detach().float()
                n_steps += 1
            if bar is not None:
                bar.update(1)
            if (b + 1) % CHECK_EVERY == 0 or b + 1 == len(batches):
                mean = (sums / n_steps).tolist()
                if not math.isfinite(mean[0]):
                    raise FloatingPointError(f"epoch {self.epoch + 1}: the loss became {mean[0]} by batch {b + 1}")
                if bar is not None:
                    bar.set_postfix(loss=f"{mean[0]:.4g}", beta=f"{beta:.2f}", tf=int(teacher_forcing))
        return sums, n_steps

    def train_epoch(self, progress=False):
        """One epoch of training then validation; returns (and records) its metrics."""
        c, e = self.config, self.epoch
        teacher_forcing = self.rng.random() < teacher_forcing_ratio(e, c)
        beta = kl_beta(e, c)
        starts = self.dataset.clip_starts(c["train_vi_len"], data_fraction(e, c))
        if c["shuffle"]:
            starts = starts[torch.randperm(len(starts), generator=self.shuffle_gen)]
        n_batches = len(starts) // c["batch_size"]  # drop_last, as the template
        batches = starts[:n_batches * c["batch_size"]].view(n_batches, c["batch_size"])
        lr = self.opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        with tqdm(total=n_batches, desc=f"epoch {e + 1}/{c['num_epoch']}", leave=False, disable=not progress,
                  unit="batch", file=sys.stderr) as bar:
            sums, n_steps = self.train_steps(batches, beta, teacher_forcing, bar)
        train_s = time.perf_counter() - t0
        self.sched.step()
        psnr, self.val_strip = validate(self, e)
        self.val_psnr = psnr
        self.epoch += 1
        loss, mse, kl = (sums / max(n_steps, 1)).tolist()
        metrics = {"epoch": self.epoch, "loss": loss, "mse": mse, "kl": kl,
                   "beta": beta, "tfr": teacher_forcing_ratio(e, c), "teacher_forcing": teacher_forcing, "lr": lr,
                   "val_psnr": psnr.mean().item(), "val_psnr_600": psnr[:600].mean().item(),
                   "train_frames_per_s": n_batches * c["batch_size"] * c["train_vi_len"] / max(train_s, 1e-9),
                   "epoch_s": time.perf_counter() - t0, "threads": torch.get_num_threads()}
        self.history.append(metrics)
        return metrics


def train(config, dataset, device="cpu", state=None, on_epoch=None, progress=False):
    """Train to config['num_epoch'] (continuing from `state` if given); `on_epoch(metrics, run)` after each
    epoch. Returns (final metrics, with `diverged` set when the loss stopped being finite; the Run)."""
    run = Run(config, dataset, device)
    if state is not None:
        run.load_state(state)
    metrics = {}
    epochs = tqdm(total=run.config["num_epoch"], initial=run.epoch, desc="training", unit="epoch",
                  disable=not progress, file=sys.stderr)
    while run.epoch < run.config["num_epoch"]:
        try:
            metrics = run.train_epoch(progress)
        except FloatingPointError as err:
            say(f"diverged: {err}")
            nan = float("nan")  # every metric a space may rank by, so a search on any of them goes on
            return {**(run.history[-1] if run.history else {}), "loss": nan, "mse": nan, "kl": nan, "val_psnr": nan,
                    "val_psnr_600": nan, "diverged": True, "epoch": run.epoch}, run
        epochs.update(1)
        epochs.set_postfix(val_psnr=f"{metrics['val_psnr']:.2f}")
        if on_epoch is not None:
            on_epoch(metrics, run)
    epochs.close()
    best = max((h["val_psnr"] for h in run.history), default=None)
    return {**metrics, "diverged": False, "best_val_psnr": best}, run


def main(args):
    """`python -m tune_cvae train` (flags: cli.train_flags)."""
    from tune_cvae.synthetic import resolve_data_dir
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
    print(json.dumps(final))


def resume_data_dir(state, given):
    """The dataset a resumed run continues on: the one its checkpoint trained on, unless --data names another
    (a moved copy); a checkpoint from before data_dir was recorded demands --data."""
    recorded = state.get("data_dir")
    if given is not None:
        given = Path(given).expanduser()
        if recorded and Path(recorded).resolve() != given.resolve():
            say(f"note: the checkpoint trained on {recorded}; continuing on {given} as --data says")
        return given
    if recorded is None:
        raise UserError("the checkpoint does not record its dataset: pass --data DIR (the folder it trained on)")
    if not Path(recorded).is_dir():
        raise UserError(f"{recorded}: the checkpoint's dataset is gone; pass --data with its new location")
    return recorded


def save_checkpoint(state, path):
    """Atomic: a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


STATE_KEYS = ("config", "epoch", "history", "model", "optimizer", "scheduler", "rng_python", "rng_shuffle",
              "rng_torch", "rng_cuda")


def load_checkpoint(path):
    """A checkpoint's state, loaded with weights_only=True: checkpoints travel between users, and a pickle that
    would import anything beyond tensors and plain values (that is, could run code) is refused unread."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint does not exist") from None
    except Exception as e:  # whatever the bytes are, the user gets one line, not the unpickler's traceback
        unsafe = re.search(r"GLOBAL (\S+)", str(e))
        if unsafe:
            raise UserError(f"{path}: refused: loading it would call {unsafe.group(1)} (a checkpoint holds only "
                            f"tensors and plain values)") from None
        raise UserError(f"{path}: not a checkpoint ({type(e).__name__}: "
                        f"{(str(e).strip().splitlines() or [''])[-1][:120]})") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{path}: not a tune_cvae checkpoint (no {', '.join(missing)})")
    state["config"] = make_config(state["config"])
    return state


if __name__ == "__main__":
    cli.main(["train", *sys.argv[1:]])
