"""The speed benchmark (`python -m tune_cvae bench speed`): the project's training path and rollout against the
template's loops (reference_loop.py) on the same data, model, device and threads, taking turns.

On the same data, model size, batch, device and threads: training frames per second of the project's training
path (train.Run: frames decoded once, a clip's frames batched, no per-step host sync) and of a faithful
re-creation of the template's loop (a DataLoader decoding the PNG files per item, every frame encoded per step;
in a process of its own, as a user's script), with and without teacher forcing, and the 630-frame validation
rollout of each (timed in 10 segments, taken in turns); a warm-up, then the median of repetitions taken in turns,
and the ratios (the median of the rounds' ratios and their range, which shows how much the machine's speed
moved). On CUDA also N trials sharing the GPU (N processes).
"""
import contextlib
import json
import math
import os
import platform
import statistics
import time

import pandas as pd
import torch

from pathlib import Path

from tune_cvae.bench.reference_loop import BATCH, CLIP, looped, template_rollout, template_training
from tune_cvae.bench.settings import SPEED_MODELS as MODELS
from tune_cvae.common import say
from tune_cvae.lab.config import make_config
from tune_cvae.lab.data import load_dataset
from tune_cvae.lab.model import model_from_config
from tune_cvae.lab.synthetic import resolve_data_dir
from tune_cvae.lab.train import Run, pick_device, train_steps


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
    """Each side (timed) handles `frames` frames per call, or per `turns` calls when its work comes in segments
    (a rollout timed segment by segment): one warm-up call each, then `reps` rounds in which the sides take `turns`
    turns, each turn running enough calls to last `min_s` seconds (interleaved, so a machine whose speed drifts
    over minutes biases neither); each side's frames per second in each round."""
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


ROLLOUT_SEGMENTS = 10  # a rollout is timed in segments, the two sides taking turns (see rollout_in_segments)


def rollout_in_segments(rollout_fn, first, labels, segments):
    """A timed side whose call rolls out the next of `segments` consecutive segments of one video: segment j goes
    on from the frame segment j-1 ended with (the first from the true first frame), so `segments` calls make the
    whole rollout, then the next call starts the video again. One rollout of a 630-frame video takes half a minute
    or more on a CPU, and a shared machine's speed drifts within that (docs/PERFORMANCE.md); segments taken in
    turns give both sides the same conditions. rollout_fn(first frame, poses) -> frames, the first included."""
    bounds = torch.linspace(0, len(labels) - 1, segments + 1).round().long().tolist()
    state = {"segment": 0, "start": first}  # the next segment and the frame it starts from

    def call():
        j = state["segment"]
        frames = rollout_fn(state["start"], labels[bounds[j]:bounds[j + 1] + 1])
        state["segment"] = (j + 1) % segments
        state["start"] = frames[-1] if state["segment"] else first
    return call


def _template_rollout_segments(config, device, weights, first, labels, segments):
    """One call = the next segment of the template's rollout of one video with the given weights."""
    model = model_from_config(config).to(device)
    model.load_state_dict(weights)
    first, labels = first.to(device), labels.to(device)
    return rollout_in_segments(lambda f, poses: template_rollout(model, f, poses), first, labels, segments)


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
    batches = looped(lambda: starts[torch.randperm(len(starts))[:len(starts) // BATCH * BATCH]].view(-1, BATCH))
    project = timed(lambda: train_steps(run, torch.stack([next(batches) for _ in range(steps)]), 0.5,
                                            teacher_forcing), device)
    frames = steps * BATCH * CLIP
    if not template:
        return frames_per_s([project], frames, reps, min_s)[0], None
    with TemplateProcess(template_training, config=config, device=str(device), data_dir=data_dir,
                         teacher_forcing=teacher_forcing, steps=steps) as loop:
        return tuple(frames_per_s([project, loop], frames, reps, min_s))


def measure_rollout(dataset, model, device, reps, config=None):
    """Each round's frames/s (project, template) of one rollout of the validation video, timed in segments taken in
    turns (rollout_in_segments) after a warm-up segment, and the frames a rollout makes (table_row's arguments after
    the row's name)."""
    run = Run(make_config({**MODELS[model], "seed": 0, **(config or {})}), dataset, device)
    first, labels = run.dataset.val_img[0].float() / 255, run.dataset.val_label.float() / 255
    gen = torch.Generator(run.device).manual_seed(0)
    frames = len(labels) - 1
    segments = min(ROLLOUT_SEGMENTS, frames)
    project = timed(rollout_in_segments(lambda f, poses: run.rollout(f, poses, "prior", gen), first, labels,
                                        segments),
                    run.device)
    with TemplateProcess(_template_rollout_segments, config=run.config, device=str(run.device), first=first.cpu(),
                         labels=labels.cpu(), weights={k: v.cpu() for k, v in run.model.state_dict().items()},
                         segments=segments) as loop:
        return (*frames_per_s([project, loop], frames, reps, 0, turns=segments), frames)


def _packed_worker(data_dir, model, seconds, start_at, threads, queue):
    """One of N trials sharing a GPU: training without teacher forcing (most epochs of a real trial) for
    `seconds` from the wall-clock time `start_at`; puts its frames per second."""
    torch.set_num_threads(threads)
    dataset = load_dataset(data_dir, progress=False)
    run = Run(make_config({**MODELS[model], "batch_size": BATCH, "train_vi_len": CLIP}), dataset, "cuda")
    starts = dataset.clip_starts(CLIP, 1.0)[:20 * BATCH].view(-1, BATCH)
    train_steps(run, starts[:2], 0.5, False)
    _sync(run.device)
    time.sleep(max(0.0, start_at - time.time()))
    t0, frames = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        train_steps(run, starts, 0.5, False)
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


def main(args):
    """`python -m tune_cvae bench speed` (flags: cli.bench_flags)."""
    table, facts = speed(args.device, args.model, args.data, args.reps, args.min_seconds, args.steps, args.threads)
    say(", ".join(f"{k} {v}" for k, v in facts.items()), result=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"facts": facts, "table": table.to_dict("records")}, indent=2))
    say(table.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep=""), result=True)
