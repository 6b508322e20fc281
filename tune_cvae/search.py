"""Builds and runs the Tuner: Optuna's TPE (ask/tell) + ASHA over a YAML space, the dataset decoded once and shared.

The experiment folder (STORAGE/NAME) holds Ray's trial folders (checkpoints, TensorBoard events), the Optuna
study (optuna.journal, for optuna-dashboard), search.yaml (what run_best.py and report.py need) and the tables.
"""
import json
import logging
import math
import os
import pickle
import time
import warnings
from pathlib import Path

import optuna
import ray
import torch
from optuna.trial import TrialState
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune import Callback

from tune_cvae import UserError, report, say
from tune_cvae.space import SEARCH_FILE, DefineByRun, Search, load_space, read_search, write_search
from tune_cvae.config import best_of, make_config
from tune_cvae.data import load_dataset
from tune_cvae.synthetic import resolve_data_dir
from tune_cvae.train import check_dataset
from tune_cvae.trainable import named_trial

DASHBOARD_PORT = 8265


def start_ray(address=None, num_cpus=None, dashboard=True):
    """Join an existing Ray session/cluster (--address or RAY_ADDRESS) or start a local one with the dashboard
    on 127.0.0.1 (token authentication stays on)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        say(f"joined the Ray cluster at {address}")
        return
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
             dashboard_port=DASHBOARD_PORT, log_to_driver=False)
    if dashboard:
        say(f"Ray dashboard: http://127.0.0.1:{DASHBOARD_PORT}  (login token: `ray get-auth-token`)")


def plan_resources(gpus, gpus_per_trial, cpus_per_trial, num_samples):
    """Check the request against what Ray sees, before any trial exists; returns (resources, max_concurrent)."""
    have = ray.cluster_resources()
    have_gpus, have_cpus = have.get("GPU", 0), have.get("CPU", 0)
    if gpus > have_gpus:
        raise UserError(f"--gpus {gpus:g}: Ray sees {have_gpus:g} GPU(s) on this machine/cluster; "
                        f"use --gpus {int(have_gpus)} (0 trains on CPUs)")
    if gpus_per_trial is None:
        gpus_per_trial = 1 if gpus > 0 else 0
    if gpus_per_trial < 0 or gpus_per_trial > max(gpus, 0) or (gpus > 0 and gpus_per_trial == 0):
        raise UserError(f"--gpus-per-trial {gpus_per_trial:g}: must be in (0, --gpus={gpus:g}] "
                        f"(or 0 with --gpus 0)")
    if gpus_per_trial > 1 and not float(gpus_per_trial).is_integer():
        raise UserError(f"--gpus-per-trial {gpus_per_trial:g}: above 1 it must be a whole number")
    biggest_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if cpus_per_trial <= 0 or cpus_per_trial > biggest_node:
        raise UserError(f"--cpus-per-trial {cpus_per_trial:g}: the largest Ray node has {biggest_node:g} CPUs")
    slots = math.floor(gpus / gpus_per_trial + 1e-9) if gpus_per_trial else math.floor(have_cpus / cpus_per_trial)
    return {"cpu": cpus_per_trial, "gpu": gpus_per_trial}, max(1, min(slots, num_samples))


def new_experiment(space_name, data_dir, samples, max_epochs, name, storage, seed):
    """(experiment folder, Search) of a new search; nothing is written yet."""
    if name is not None:
        check_name(name)
    space = load_space(space_name)
    if samples is not None:
        if samples < len(space.points_to_evaluate):
            raise UserError(f"--samples {samples}: {space.path} evaluates {len(space.points_to_evaluate)} start "
                            f"points first; pass at least that many")
        space.num_samples = samples
    if max_epochs is not None:
        space.max_epochs = max_epochs
        space.grace_period = min(space.grace_period, max_epochs)
    name = name or f"{Path(space.path).stem[:40]}-{time.strftime('%Y%m%d-%H%M%S')}"  # 40 characters <= 160 bytes
    exp_dir = storage / name
    if exp_dir.exists():
        raise UserError(f"{exp_dir}: already exists; pass --resume to continue it or another --name")
    return exp_dir, Search(space, str(resolve_data_dir(data_dir)), seed, {})


NAME_BYTES = 200  # an experiment's folder name: one path component, which file systems cap at 255 bytes


def check_name(name):
    """An experiment name is one folder name inside --storage, never a path that leads out of it."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UserError(f"--name {name!r}: must be one folder name inside --storage (no '/', not '.' or '..')")
    if len(name.encode()) > NAME_BYTES:
        raise UserError(f"--name {name[:20]!r}...: {len(name.encode())} bytes; at most {NAME_BYTES} (a folder name)")


def reopen_experiment(name, storage):
    """(experiment folder, Search) of an interrupted search, to resume it."""
    if not name:
        raise UserError("--resume needs --name of the experiment to continue")
    check_name(name)
    exp_dir = storage / name
    if not (exp_dir / SEARCH_FILE).is_file() or not tune.Tuner.can_restore(str(exp_dir)):
        raise UserError(f"{exp_dir}: no search to resume there")
    return exp_dir, read_search(exp_dir)


def check_local_gpus(gpus, address):
    """A local search that asks for more GPUs than torch sees fails here, before any data is decoded."""
    if address or os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return
    local_gpus = torch.cuda.device_count()
    if gpus > local_gpus:
        raise UserError(f"--gpus {gpus:g}: this machine has {local_gpus} GPU(s) visible to torch; "
                        f"use --gpus {local_gpus} (0 trains on CPUs)")


def warn_cpu_duration(space, resources, dataset, concurrent):
    """One warning line when a template-size model is about to train on CPUs, with a rough duration from one
    batch timed here: a search meant for GPUs should not start for days on a laptop without a word."""
    config = make_config(space.trial_config({}))
    if resources["gpu"] > 0 or config["F_dim"] < 128 or config["D_out_dim"] < 192:
        return
    threads = max(1, int(resources["cpu"]))
    frames_per_s = cpu_frames_per_s(config, dataset, threads)
    train_frames = dataset.train_img.shape[0]
    epoch_s = train_frames * config["partial"] / frames_per_s
    total_h = space.num_samples * space.max_epochs * epoch_s / concurrent / 3600
    say(f"warning: {Path(space.path).name} trains the template-size model on CPUs: about {epoch_s / 60:.0f} min per "
        f"trial-epoch here ({train_frames} frames at {frames_per_s:.1f} frames/s, timed now with {threads} "
        f"thread(s)), up to {total_h:.0f} hours for {space.num_samples} trials x {space.max_epochs} epochs, "
        f"{concurrent} at a time; use --gpus N, or --space demo.yaml for a CPU-sized search")


def cpu_frames_per_s(config, dataset, threads):
    """Training frames per second of `config` on this machine's CPU with `threads` torch threads: one teacher-forced
    batch timed after a warm-up batch."""
    from tune_cvae.train import Run, epoch_batches, train_steps
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = Run({**config, "partial": 1.0, "fast_train": False}, dataset)
        batches = epoch_batches(run, 0)[:2]
        train_steps(run, batches[:1], 0.0, True)
        t0 = time.perf_counter()
        train_steps(run, batches[1:], 0.0, True)
        return batches[1].numel() * config["train_vi_len"] / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


def build_tuner(exp_dir, record, trainable, concurrent, resume, verbose):
    """A Tuner restored from `exp_dir`, or a new one (TPE + ASHA) whose search.yaml is written now. Ray's own
    console output is off (a config and a result box per trial); StatusTable prints one table instead. Ray's
    TensorBoard logger is left out, so TensorBoard shows one run per trial (the trainable's)."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    if resume:
        return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    space = record.space
    exp_dir.mkdir(parents=True)
    write_search(exp_dir, record)
    return tune.Tuner(trainable, tune_config=tune.TuneConfig(
        search_alg=_searcher(space, exp_dir, record.seed), scheduler=_scheduler(space),
        num_samples=space.num_samples, max_concurrent_trials=concurrent, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=exp_dir.name, storage_path=str(exp_dir.parent), verbose=0,
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback()] + ([StatusTable(space)] if verbose else []),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=space.metric,
                                                    checkpoint_score_order=space.mode),
            failure_config=tune.FailureConfig(max_failures=1)))


def run(space_name="kl_tfr.yaml", *, data_dir=None, gpus=0, gpus_per_trial=None, cpus_per_trial=1, samples=None,
        max_epochs=None, name=None, storage="ray_results", address=None, resume=False, seed=0, num_cpus=None,
        dashboard=True, verbose=1):
    """The whole search; returns the experiment folder. UserError for anything the user can fix."""
    storage = Path(storage).expanduser().resolve()
    if resume:
        exp_dir, record = reopen_experiment(name, storage)
    else:
        exp_dir, record = new_experiment(space_name, data_dir, samples, max_epochs, name, storage, seed)
    space = record.space
    check_local_gpus(gpus, address)
    dataset = load_dataset(record.data_dir)  # every split checked and decoded once, before Ray or any trial
    check_dataset(make_config(space.trial_config({})), dataset)
    say(f"data: {dataset.root} ({dataset.train_img.shape[0]} train frames, {dataset.val_img.shape[0]} val frames, "
        f"{dataset.test_first.shape[0]} test videos)")
    start_ray(address, num_cpus, dashboard)
    record.resources, concurrent = plan_resources(gpus, gpus_per_trial, cpus_per_trial, space.num_samples)
    warn_cpu_duration(space, record.resources, dataset, concurrent)
    trainable = tune.with_resources(tune.with_parameters(named_trial(list(space.params)),
                                                         arrays=dataset.as_arrays()), record.resources)
    say(f"TensorBoard: tensorboard --logdir {exp_dir}")
    say(f"Optuna study: optuna-dashboard {exp_dir / report.JOURNAL}")
    tuner = build_tuner(exp_dir, record, trainable, concurrent, resume, verbose)
    say(f"search: {space.num_samples} trials of up to {space.max_epochs} epochs, {concurrent} at a time, "
        f"{record.resources['cpu']:g} CPU + {record.resources['gpu']:g} GPU each; experiment folder {exp_dir}")
    watch = _RayStopWatch()
    logging.getLogger("ray.tune.tune").addFilter(watch)
    (exp_dir / report.INTERRUPTED_FILE).unlink(missing_ok=True)  # a resumed search starts uninterrupted
    try:
        with warnings.catch_warnings():  # ASHA's cutoff over rungs whose results are all NaN (diverged trials)
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            grid = tuner.fit()  # Ray turns Ctrl-C into a last save of the experiment state and returns
    finally:
        logging.getLogger("ray.tune.tune").removeFilter(watch)
    interrupted = watch.stopped or grid.num_terminated + grid.num_errors < space.num_samples
    if interrupted:
        (exp_dir / report.INTERRUPTED_FILE).write_text(json.dumps(_cut_trials(exp_dir)) + "\n")
    table = report.write(exp_dir)
    print(report.console(table, space.metric))
    if interrupted:
        command = f"python run_search.py --resume --name {exp_dir.name}"
        if storage != Path("ray_results").resolve():
            command += f" --storage {storage}"
        raise Interrupted(f"search interrupted with {grid.num_terminated + grid.num_errors} of {space.num_samples} "
                          f"trials done; continue it with: {command}")
    check_some_trial_worked(exp_dir, table, space.metric)
    say(f"wrote {exp_dir / 'trials.csv'}, trials.md, trials.html and the report {exp_dir / 'report' / 'index.html'}")
    say(f"next: python run_best.py --experiment {exp_dir}")
    return exp_dir


class StatusTable(Callback):
    """The console's view of a running search: one table of every trial (status, epochs, the objective's last
    and best value, the searched values), printed when a trial ends and at most every `every` seconds between."""

    def __init__(self, space, every=60.0):
        self.space, self.every, self.rows, self.printed = space, every, {}, 0.0

    def _row(self, trial):
        if trial.trial_id not in self.rows:
            self.rows[trial.trial_id] = {"trial_id": trial.trial_id, "status": "running", "epoch": 0,
                                         "last": math.nan, "best": math.nan,
                                         **{p: trial.config.get(p, "") for p in self.space.params}}
        return self.rows[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._row(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row, value = self._row(trial), result.get(self.space.metric)
        row["epoch"] = int(result.get("epoch", row["epoch"]))
        if isinstance(value, (int, float)) and math.isfinite(value):
            row["last"] = value
            row["best"] = value if math.isnan(row["best"]) else best_of(self.space.mode)(row["best"], value)
        if time.monotonic() - self.printed > self.every:
            self.show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["status"] = report.trial_status(trial.last_result, trial.config.get("num_epoch", self.space.max_epochs),
                                            self.space.metric)
        if row["status"] == report.STOPPED:
            row["status"] += f" (ASHA, epoch {row['epoch']})"
        self.show()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._row(trial)["status"] = report.ERRORED
        self.show()

    def show(self):
        import pandas as pd
        self.printed = time.monotonic()
        table = pd.DataFrame(list(self.rows.values())).rename(
            columns={"last": f"last {self.space.metric}", "best": f"best {self.space.metric}"})
        counts = table["status"].str.split(" ").str[0].value_counts().to_dict()
        print(f"\n[{time.strftime('%H:%M:%S')}] {len(table)} of {self.space.num_samples} trials started: "
              + ", ".join(f"{n} {s}" for s, n in counts.items()), flush=True)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""), flush=True)


def _cut_trials(exp_dir):
    """Ray trial ids the study never heard the end of (ASHA's stops were told as PRUNED, finished trials as
    COMPLETE): the trials an interruption cut off, whatever status Ray saved for them."""
    study = optuna.load_study(study_name=exp_dir.name, storage=report.study_storage(exp_dir))
    return [t.user_attrs["ray_trial_id"] for t in study.trials
            if t.state == TrialState.RUNNING and "ray_trial_id" in t.user_attrs]


class Interrupted(Exception):
    """Ctrl-C (or SIGUSR1) ended the search; the message says how to continue it. run_search.py exits 130."""


class _RayStopWatch(logging.Filter):
    """On Ray Tune's logger during fit: notes Ray's "Stop signal received" (Ctrl-C or SIGUSR1, which Ray turns into
    a normal return, some trials possibly marked terminated) and drops Ray's resume hint, which names
    Tuner.restore(...): a CLI user cannot type that, so the CLI prints its own."""

    def __init__(self):
        super().__init__()
        self.stopped = False

    def filter(self, record):
        message = record.getMessage()
        self.stopped = self.stopped or "Stop signal received" in message
        return "Tuner.restore" not in message and "Trials did not complete" not in message


def check_some_trial_worked(exp_dir, table, metric):
    """A search none of whose trials produced a finite metric failed, whatever Ray says: one line naming why. One
    where only some errored worked, but says so: an errored trial is a bug (the space was checked), not noise."""
    errored = int((table["status"] == "errored").sum()) if not table.empty else 0
    why = first_error(exp_dir)
    if not table.empty and table["status"].isin(report.USABLE).any():
        if errored:
            say(f"warning: {errored} of {len(table)} trials errored; {why}")
        return
    counts = table["status"].value_counts().to_dict() if not table.empty else {}
    raise UserError(f"{exp_dir}: no trial finished an epoch with a finite {metric} "
                    f"({', '.join(f'{n} {s}' for s, n in counts.items()) or 'no trials ran'})"
                    + (f"; {why}" if why else ""))


def first_error(exp_dir):
    """'first error in FILE: its last line' of the trial that errored first, or '' where none did."""
    errors = sorted(Path(exp_dir).glob("trial_*/error.txt"), key=lambda p: p.stat().st_mtime)
    if not errors:
        return ""
    lines = errors[0].read_text(errors="replace").strip().splitlines() or ["(empty)"]
    return f"first error in {errors[0]}: {lines[-1][:200]}"


def _trial_dirname(trial):
    return f"trial_{trial.trial_id}"  # Ray's default packs every parameter into the folder name


class AskTellSearcher(Searcher):
    """TPE through Optuna's ask/tell, so that the study records what really happened: every epoch's metric is an
    intermediate value (step = epoch), a trial ASHA stopped is PRUNED (TPE ranks it by its last step, below
    finished trials), an errored or diverged trial is FAIL, and a finished trial's value is its best epoch's
    metric, the quantity trials.csv and run_best.py rank by. Each Optuna trial carries its Ray trial id as the
    user attribute `ray_trial_id`. (Ray's OptunaSearch tells an early-stopped trial as COMPLETE.)"""

    def __init__(self, space, study):
        super().__init__(metric=space.metric, mode=space.mode)
        self.space, self.study = space, study
        self.trials, self.values = {}, {}  # Ray trial id -> Optuna trial, {epoch: metric}

    def suggest(self, trial_id):
        trial = self.study.ask()
        trial.set_user_attr("ray_trial_id", trial_id)
        constants = DefineByRun(self.space)(trial)
        self.trials[trial_id], self.values[trial_id] = trial, {}
        return {**constants, **trial.params}

    def on_trial_result(self, trial_id, result):
        value, epoch = result.get(self.metric), int(result.get("epoch", 0))
        if trial_id in self.trials and isinstance(value, (int, float)) and math.isfinite(value) \
                and epoch not in self.values[trial_id]:
            self.trials[trial_id].report(value, step=epoch)
            self.values[trial_id][epoch] = value

    def on_trial_complete(self, trial_id, result=None, error=False):
        if result:  # Ray hands a trial's last result (the one ASHA stopped it on) only to this method
            self.on_trial_result(trial_id, result)
        trial, values = self.trials.pop(trial_id, None), list(self.values.pop(trial_id, {}).values())
        if trial is None:
            return
        status = report.trial_status(result, self.space.max_epochs, self.metric, errored=error)
        if status == report.FINISHED and values:
            self.study.tell(trial, best_of(self.mode)(values))
        elif status == report.STOPPED and values:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def save(self, checkpoint_path):
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path):
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def _searcher(space, exp_dir, seed):
    """TPE (seeded, multivariate, constant liar for concurrent trials); the study kept in optuna.journal in the
    experiment folder, named after it, its objective named after the metric; points_to_evaluate go first."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group, constant_liar
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                         n_startup_trials=min(10, max(2, space.num_samples // 3)))
    study = optuna.create_study(study_name=exp_dir.name, storage=report.study_storage(exp_dir), sampler=sampler,
                                direction="maximize" if space.mode == "max" else "minimize")
    study.set_metric_names([space.metric])
    for point in space.points_to_evaluate:
        study.enqueue_trial(point)
    return AskTellSearcher(space, study)


def _scheduler(space):
    return ASHAScheduler(time_attr="epoch", metric=space.metric, mode=space.mode, max_t=space.max_epochs,
                         grace_period=space.grace_period, reduction_factor=space.reduction_factor)
