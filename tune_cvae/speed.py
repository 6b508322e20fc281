"""The speed benchmark (`python -m tune_cvae.bench speed`) and its yardstick, a faithful re-creation of the course
template's training and validation loops, which is also the reference the project's batched step must equal.
"""
import contextlib
import math
import os
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from tune_cvae import say
from tune_cvae.config import make_config
from tune_cvae.data import IMG_H, IMG_W, load_dataset, paired_frames
from tune_cvae.model import kl_divergence, model_from_config
from tune_cvae.synthetic import resolve_data_dir
from tune_cvae.train import Run, pick_device

BATCH, CLIP = 2, 16  # the template's batch size and clip length


class TemplateClips(torch.utils.data.Dataset):
    """The template's Dataset_Dance: clip i is frames i*T .. i*T+T-1 of the sorted training list, each PNG opened,
    resized to 32x64 and made a tensor in __getitem__, so every epoch decodes every file again."""

    def __init__(self, root, vi_len=CLIP):
        from torchvision import transforms
        imgs, labels = paired_frames(Path(root) / "train/train_img", Path(root) / "train/train_label")
        self.imgs, self.labels = [e.path for e in imgs], [e.path for e in labels]  # picklable for any start method
        self.vi_len = vi_len
        self.transform = transforms.Compose([transforms.Resize((IMG_H, IMG_W)), transforms.ToTensor()])

    def __len__(self):
        return len(self.imgs) // self.vi_len

    def _load(self, path):
        return self.transform(Image.open(path).convert("RGB"))

    def __getitem__(self, i):
        part = slice(i * self.vi_len, (i + 1) * self.vi_len)
        return (torch.stack([self._load(e) for e in self.imgs[part]]),
                torch.stack([self._load(e) for e in self.labels[part]]))


def template_step(model, opt, img, label, beta, teacher_forcing, grad_clip=1.0, eps=None):
    """The template's training_one_step: frame by frame, the previous and the current frame each encoded, the
    per-frame losses added up (divided by the frame count here, so it is the project's loss), one backward,
    clipping, one Adam step, and the loss read back for the progress bar. `eps` (B, T-1, N, H, W): the noise."""
    img, label = img.transpose(0, 1), label.transpose(0, 1)  # (T, B, 3, H, W)
    loss, prev = 0.0, img[0]
    for i in range(1, len(img)):
        label_feat = model.label_transformation(label[i])
        z, mu, logvar = model.Gaussian_Predictor(model.frame_transformation(img[i]), label_feat,
                                                 None if eps is None else eps[:, i - 1])
        out = model.generate(model.frame_transformation(prev), label_feat, z, prev)
        loss = loss + F.mse_loss(out, img[i]) + beta * kl_divergence(mu, logvar, "sum_batch")
        prev = img[i] if teacher_forcing else out.detach()
    loss = loss / (len(img) - 1)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


@torch.no_grad()
def template_rollout(model, first, labels):
    """The template's val_one_step: per frame the pose and the previous frame encoded, z drawn, a frame made."""
    model.eval()
    prev, frames = first[None], [first]
    for i in range(1, len(labels)):
        z = torch.randn(1, model.N_dim, IMG_H, IMG_W, device=labels.device)
        prev = model.generate(model.frame_transformation(prev), model.label_transformation(labels[i:i + 1]), z, prev)
        frames.append(prev[0])
    return torch.stack(frames)


MODELS = {"template": {}, "small": {"F_dim": 32, "L_dim": 16, "N_dim": 4, "D_out_dim": 48}}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """fn as a timed repetition: number of calls -> seconds those calls took."""
    def repeat(calls):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        return time.perf_counter() - t0
    return repeat


def frames_per_s(sides, frames, reps, min_s, turns=1):
    """Each side (timed) handles `frames` frames per call, or per `turns` calls when its work comes in pieces (a
    rollout timed piece by piece): one warm-up call each, then `reps` rounds in which the sides take `turns` turns,
    each turn running enough calls to last `min_s` seconds (interleaved, so a machine whose speed drifts over
    minutes biases neither); each side's frames per second in each round."""
    calls = [max(1, math.ceil(min_s / max(side(1), 1e-3))) for side in sides]
    rates = [[] for _ in sides]
    for _ in range(reps):
        spent = [0.0] * len(sides)
        for _ in range(turns):
            for i, (side, n) in enumerate(zip(sides, calls)):
                spent[i] += side(n)
        for got, n, s in zip(rates, calls, spent):
            got.append(n * frames / s)
    return rates


def table_row(what, project, template=None, frames=None):
    """A row of the table from each round's frames/s: the medians (seconds per `frames` frames when given), and
    the project's speed over the template loop's, each round's sides ran back to back: the median of the rounds'
    ratios and their range (how much the ratio moved during the measurement)."""
    unit, shown = ("frames/s", statistics.median) if frames is None else ("s", lambda r: frames / statistics.median(r))
    row = {"what": what, "unit": unit, "project": shown(project), "template_loop": math.nan, "ratio": math.nan,
           "ratio_range": ""}
    if template:
        ratios = [p / t for p, t in zip(project, template)]
        row.update(template_loop=shown(template), ratio=statistics.median(ratios),
                   ratio_range=f"{min(ratios):.2f}-{max(ratios):.2f}")
    return row


def _looped(iterable_factory):
    """An endless iterator over a re-created iterable (a DataLoader's epochs, a list of batches)."""
    while True:
        yield from iterable_factory()


def _template_training(config, device, data_dir, teacher_forcing, steps):
    """One call = `steps` steps of the template's loop over its own DataLoader, from the same initial weights."""
    torch.manual_seed(0)
    model = model_from_config(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loader = torch.utils.data.DataLoader(TemplateClips(data_dir), batch_size=BATCH, shuffle=True, drop_last=True,
                                         num_workers=min(4, max(1, (os.cpu_count() or 2) // 2)),
                                         persistent_workers=True)
    clips = _looped(lambda: loader)

    def calls():
        model.train()
        for _ in range(steps):
            img, label = next(clips)
            template_step(model, opt, img.to(device), label.to(device), 0.5, teacher_forcing)
    return calls


ROLLOUT_PIECES = 10  # a rollout is timed in pieces, the two sides taking turns (see rollout_in_pieces)


def rollout_in_pieces(rollout_fn, first, labels, pieces):
    """A timed side whose call rolls out the next of `pieces` consecutive pieces of one video: piece j goes on from
    the frame piece j-1 ended with (the first from the true first frame), so `pieces` calls make the whole rollout,
    then the next call starts the video again. One rollout of a 630-frame video takes half a minute or more on a
    CPU, and a shared machine's speed drifts within that (docs/PERFORMANCE.md); pieces taken in turns give both
    sides the same conditions. rollout_fn(first frame, poses) -> frames, the given first one included."""
    bounds = torch.linspace(0, len(labels) - 1, pieces + 1).round().long().tolist()
    state = {"piece": 0, "start": first}  # the next piece and the frame it starts from

    def call():
        j = state["piece"]
        frames = rollout_fn(state["start"], labels[bounds[j]:bounds[j + 1] + 1])
        state["piece"] = (j + 1) % pieces
        state["start"] = frames[-1] if state["piece"] else first
    return call


def _template_rollout(config, device, weights, first, labels, pieces):
    """One call = the next piece of the template's rollout of one video with the given weights."""
    model = model_from_config(config).to(device)
    model.load_state_dict(weights)
    first, labels = first.to(device), labels.to(device)
    return rollout_in_pieces(lambda f, poses: template_rollout(model, f, poses), first, labels, pieces)


def _template_side(conn, make, threads, kwargs):
    """The template's side of a measurement, in a process of its own as a user's script would run (none of the
    project's process-wide settings, such as keep_freed_memory, apply): a timed repetition per request."""
    torch.set_num_threads(threads)
    kwargs["device"] = torch.device(kwargs["device"])
    repeat = timed(make(**kwargs), kwargs["device"])
    while calls := conn.recv():
        conn.send(repeat(calls))


class TemplateProcess:
    """A timed side (see timed) whose calls run in a spawned process: _template_side with `make`(**kwargs)."""

    def __init__(self, make, **kwargs):
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_template_side, args=(child, make, torch.get_num_threads(), kwargs))
        self.proc.start()

    def __call__(self, calls):
        try:
            self.conn.send(calls)
            return self.conn.recv()
        except (EOFError, OSError):  # a broken pipe or a reset connection: the child is gone
            self.proc.join()
            raise RuntimeError(f"the template loop's process ended (exit code {self.proc.exitcode}); its error is "
                               "printed above") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(OSError):  # it may have ended already
            self.conn.send(0)
        self.proc.join()


def measure_training(data_dir, dataset, model, device, teacher_forcing, steps, reps, min_s, config=None,
                     template=True):
    """Each round's frames/s (project, template loop or None) of `steps` optimiser steps per call, same model,
    batch."""
    config = make_config({**MODELS[model], "batch_size": BATCH, "train_vi_len": CLIP, "seed": 0, **(config or {})})
    run = Run(config, dataset, device)
    starts = dataset.clip_starts(CLIP, 1.0)
    batches = _looped(lambda: starts[torch.randperm(len(starts))[:len(starts) // BATCH * BATCH]].view(-1, BATCH))
    project = timed(lambda: run.train_steps(torch.stack([next(batches) for _ in range(steps)]), 0.5,
                                            teacher_forcing), device)
    frames = steps * BATCH * CLIP
    if not template:
        return frames_per_s([project], frames, reps, min_s)[0], None
    with TemplateProcess(_template_training, config=config, device=str(device), data_dir=data_dir,
                         teacher_forcing=teacher_forcing, steps=steps) as loop:
        return tuple(frames_per_s([project, loop], frames, reps, min_s))


def measure_rollout(dataset, model, device, reps, config=None):
    """Each round's frames/s (project, template) of one rollout of the validation video, timed in pieces taken in
    turns (rollout_in_pieces) after a warm-up piece, and the frames a rollout makes (table_row's arguments after
    the row's name)."""
    run = Run(make_config({**MODELS[model], "seed": 0, **(config or {})}), dataset, device)
    first, labels = run.dataset.val_img[0].float() / 255, run.dataset.val_label.float() / 255
    gen = torch.Generator(run.device).manual_seed(0)
    frames = len(labels) - 1
    pieces = min(ROLLOUT_PIECES, frames)
    project = timed(rollout_in_pieces(lambda f, poses: run.rollout(f, poses, "prior", gen), first, labels, pieces),
                    run.device)
    with TemplateProcess(_template_rollout, config=run.config, device=str(run.device), first=first.cpu(),
                         labels=labels.cpu(), weights={k: v.cpu() for k, v in run.model.state_dict().items()},
                         pieces=pieces) as loop:
        return (*frames_per_s([project, loop], frames, reps, 0, turns=pieces), frames)


def _packed_worker(data_dir, model, seconds, start_at, threads, queue):
    """One of N trials sharing a GPU: training without teacher forcing (most epochs of a real trial) for
    `seconds` from the wall-clock time `start_at`; puts its frames per second."""
    torch.set_num_threads(threads)
    dataset = load_dataset(data_dir, progress=False)
    run = Run(make_config({**MODELS[model], "batch_size": BATCH, "train_vi_len": CLIP}), dataset, "cuda")
    starts = dataset.clip_starts(CLIP, 1.0)[:20 * BATCH].view(-1, BATCH)
    run.train_steps(starts[:2], 0.5, False)
    _sync(run.device)
    time.sleep(max(0.0, start_at - time.time()))
    t0, frames = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        run.train_steps(starts, 0.5, False)
        frames += starts.numel() * CLIP
    _sync(run.device)
    queue.put(frames / (time.perf_counter() - t0))


def measure_packed(data_dir, model, n, seconds=20):
    """Total training frames/s of n processes sharing one GPU (torch threads split between them)."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // n)
    start_at = time.time() + 30 + 5 * n  # after every process has loaded the data and warmed up
    procs = [ctx.Process(target=_packed_worker, args=(data_dir, model, seconds, start_at, threads, queue))
             for _ in range(n)]
    for proc in procs:
        proc.start()
    rates = [queue.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return sum(rates)


def speed(device="cpu", model="template", data=None, reps=5, min_s=2.0, steps=None, threads=None,
          packed=(1, 2, 4, 8)):
    """The speed table (a DataFrame) and the facts that go with it (machine, torch, threads, date)."""
    device = pick_device(device)
    if threads:
        torch.set_num_threads(threads)
    data_dir = resolve_data_dir(data)
    dataset = load_dataset(data_dir, progress=False)
    steps = steps or (20 if device.type == "cuda" else 1)
    rows = []
    for tf in (True, False):
        say(f"training, teacher forcing {'on' if tf else 'off'}: the project's path and the template's loop (in its "
            "own process), taking turns")
        rows.append(table_row(f"training, teacher forcing {'on' if tf else 'off'}",
                              *measure_training(data_dir, dataset, model, device, tf, steps, reps, min_s)))
    if device.type == "cuda":  # the same path compiled (CUDA graphs): kept only if it measures faster
        for tf in (True, False):
            say(f"training, teacher forcing {'on' if tf else 'off'}, compiled (CUDA graphs; compiling first)")
            rows.append(table_row(f"training, teacher forcing {'on' if tf else 'off'}, compile: true",
                                  *measure_training(data_dir, dataset, model, device, tf, steps, reps, min_s,
                                                    {"compile": True}, template=False)))
    say("rollout of the validation video: the project's and the template's (in its own process), taking turns")
    rows.append(table_row(f"rollout of {len(dataset.val_img)} frames", *measure_rollout(dataset, model, device, reps)))
    if device.type == "cuda":
        say("rollout of the validation video, compiled (CUDA graphs; compiling first)")
        rows.append(table_row(f"rollout of {len(dataset.val_img)} frames, compile: true",
                              *measure_rollout(dataset, model, device, reps, {"compile": True})))
        one = None
        for n in packed:
            say(f"{n} trial(s) sharing the GPU, no teacher forcing")
            total = measure_packed(data_dir, model, n)
            one = one or total
            rows.append({**table_row(f"{n} trials sharing the GPU, no teacher forcing (total)", [total]),
                         "ratio": total / one})
    facts = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
             or platform.machine(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
             "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "model": model, "batch": BATCH,
             "clip": CLIP, "data": str(data_dir), "steps_per_call": steps, "reps": reps}
    return pd.DataFrame(rows), facts
