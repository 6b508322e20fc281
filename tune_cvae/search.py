"""Builds and runs the Tuner: Optuna's TPE or random sampler (ask/tell), ASHA or no early stopping, over a YAML
space, the dataset decoded once and shared; a trial-epoch budget ends the search where the space sets one.

The experiment folder (STORAGE/NAME) holds Ray's trial folders (checkpoints, TensorBoard events), the Optuna
study (optuna.journal, for optuna-dashboard), search.yaml (what run_best.py and report.py need) and the tables.
"""
import json
import logging
import math
import os
import pickle
import shutil
import signal
import time
import warnings
from pathlib import Path

import ray
import torch
from optuna.trial import TrialState
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune import Callback, Stopper
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.schedulers.pb2 import PB2
from ray.tune.search import BasicVariantGenerator, Searcher

from tune_cvae import DISK_ERRORS, UserError, check_writable, report, say, write_whole
from tune_cvae.config import best_of, make_config
from tune_cvae.data import load_dataset
from tune_cvae.experiment import (Interrupted, check_name, check_some_trial_worked, cut_trials, new_experiment,
                                  resume_command, warn_cpu_duration, written_table)
from tune_cvae.space import PBT, SEARCH_FILE, DefineByRun, read_search, write_search
from tune_cvae.study import new_study
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


def build_tuner(exp_dir, record, trainable, concurrent, resume, verbose):
    """A Tuner restored from `exp_dir`, or a new one (the space's searcher, scheduler and budget) whose
    search.yaml is written now. Ray's own console output is off (a config and a result box per trial);
    StatusTable prints one table instead. Ray's TensorBoard logger is left out, so TensorBoard shows one run per
    trial (the trainable's)."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    if resume:
        try:
            return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                      resume_errored=True)
        except (ValueError, EOFError, pickle.UnpicklingError) as e:  # a state file cut short or damaged
            raise UserError(f"{exp_dir}: Ray's saved state there cannot be read ({type(e).__name__}: "
                            f"{str(e)[:120]}); this search cannot be resumed") from None
    space = record.space
    scheduler = _scheduler(space)  # before the folder: a scheduler that cannot be built leaves nothing behind
    exp_dir.mkdir(parents=True)
    write_search(exp_dir, record)
    LEDGERS.pop(str(exp_dir), None)  # an earlier search of this path in this process spent nothing of this one
    if space.scheduler in PBT:  # Ray's PBT refuses a searcher: its population is drawn from a param_space
        search_alg, param_space = population(space, record.seed), space_domains(space)
        keep = tune.CheckpointConfig(num_to_keep=space.pbt["interval"] + 2)  # the newest: a donor's stays there
    else:  # until the trials that exploit it have loaded it (an older one kept for its score would not do)
        search_alg, param_space = _searcher(space, exp_dir, record.seed, record.warm_start), None
        keep = tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=space.metric,
                                     checkpoint_score_order=space.mode)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune.TuneConfig(
        search_alg=search_alg, scheduler=scheduler,
        num_samples=space.num_samples, max_concurrent_trials=concurrent, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=exp_dir.name, storage_path=str(exp_dir.parent), verbose=0,
            stop=BudgetStop(exp_dir, space.budget) if space.budget else None,
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), StorageGuard(exp_dir, concurrent)]
            + ([StatusTable(space, exp_dir)] if verbose else []),
            checkpoint_config=keep, failure_config=tune.FailureConfig(max_failures=1)))


def run(space_name="kl_tfr.yaml", *, data_dir=None, gpus=0, gpus_per_trial=None, cpus_per_trial=1, samples=None,
        max_epochs=None, searcher=None, scheduler=None, budget=None, warm_start=None, name=None,
        storage="ray_results", address=None, resume=False, seed=0, num_cpus=None, dashboard=True, verbose=1):
    """The whole search; returns the experiment folder. UserError for anything the user can fix. samples,
    max_epochs, searcher, scheduler and budget replace the space's values (None keeps them)."""
    storage = Path(storage).expanduser().resolve()
    check_writable(storage, "--storage")
    if resume:
        exp_dir, record = reopen_experiment(name, storage)
    else:
        exp_dir, record = new_experiment(space_name, data_dir, name, storage, seed, {
            "samples": samples, "max_epochs": max_epochs, "searcher": searcher, "scheduler": scheduler,
            "budget": budget}, warm_start)
    space = record.space
    check_local_gpus(gpus, address)
    dataset = load_dataset(record.data_dir)  # every split checked and decoded once, before Ray or any trial
    check_dataset(make_config(space.trial_config({})), dataset)
    say(f"data: {dataset.root} ({dataset.train_img.shape[0]} train frames, {dataset.val_img.shape[0]} val frames, "
        f"{dataset.test_first.shape[0]} test videos)")
    start_ray(address, num_cpus, dashboard)
    record.resources, concurrent = plan_resources(gpus, gpus_per_trial, cpus_per_trial, space.num_samples)
    warn_cpu_duration(space, record.resources, dataset, concurrent)
    named = named_trial([p for p in space.params if p not in space.mutated])  # a name that PBT does not change
    trainable = tune.with_resources(tune.with_parameters(named, arrays=dataset.as_arrays()), record.resources)
    say(f"TensorBoard: tensorboard --logdir {exp_dir}")
    if space.scheduler not in PBT:
        say(f"Optuna study: optuna-dashboard {exp_dir / report.JOURNAL}")
    tuner = build_tuner(exp_dir, record, trainable, concurrent, resume, verbose)
    say(f"search: {space.searcher} + {space.scheduler}, {space.num_samples} trials of up to {space.max_epochs} epochs"
        + (f" or {space.budget} trial-epochs in all" if space.budget else "") + f", {concurrent} at a time, "
        f"{record.resources['cpu']:g} CPU + {record.resources['gpu']:g} GPU each; experiment folder {exp_dir}")
    grid, watch = fit(tuner, exp_dir)
    return finish(exp_dir, grid, watch, space, resume_command(exp_dir, storage))


def fit(tuner, exp_dir):
    """tuner.fit() with Ctrl-C, SIGUSR1 and SIGTERM as endings: Ray saves the experiment state one last time and
    returns. Returns (the ResultGrid, the _RayStopWatch that saw how it ended)."""
    watch = _RayStopWatch()
    logger = logging.getLogger("ray.tune.tune")
    logger.addFilter(watch)
    previous = signal.signal(signal.SIGTERM, watch.on_sigterm)  # Ray's own handler exits mid-save
    (exp_dir / report.INTERRUPTED_FILE).unlink(missing_ok=True)  # a resumed search starts uninterrupted
    try:
        with warnings.catch_warnings():  # ASHA's cutoff over rungs whose results are all NaN (diverged trials)
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            warnings.filterwarnings("ignore", "Consider boosting PBT performance")  # actor reuse: not for us
            grid = tuner.fit()
    except OSError as e:  # the disk filled (or went read-only) faster than StorageGuard could see it coming
        if e.errno not in DISK_ERRORS:
            raise
        print(report.console(written_table(exp_dir), read_search(exp_dir).space.metric))
        raise Interrupted(f"{exp_dir}: {e.strerror} (the search stopped there); free space, then continue it with: "
                          f"{resume_command(exp_dir, exp_dir.parent)}", 1) from None
    finally:
        logger.removeFilter(watch)
        signal.signal(signal.SIGTERM, previous)
    return grid, watch


def finish(exp_dir, grid, watch, space, command):
    """The search's ending: the trial table (written, and printed), then the next command; an interrupted search
    raises Interrupted with the command that continues it."""
    ended = grid.num_terminated + grid.num_errors >= space.num_samples or budget_spent(exp_dir, space.budget)
    interrupted = watch.stopped or not ended
    if interrupted:
        write_whole(exp_dir / report.INTERRUPTED_FILE, json.dumps(cut_trials(exp_dir)) + "\n")
    table = written_table(exp_dir)
    print(report.console(table, space.metric))
    done = int((table["status"] != report.INTERRUPTED).sum()) if not table.empty else 0
    short = StorageGuard.short_of_space.pop(str(exp_dir), None)
    if short:
        raise Interrupted(f"{exp_dir}: no space left for the search ({short[0] / 2**20:.0f} MB free, it keeps "
                          f"{short[1] / 2**20:.0f} MB for its checkpoints and state); {done} of {space.num_samples} "
                          f"trials done; free space, then continue it with: {command}", 1)
    if interrupted:
        raise Interrupted(f"search interrupted with {done} of {space.num_samples} trials done; continue it with: "
                          f"{command}", 128 + (signal.SIGTERM if watch.terminated else signal.SIGINT))
    check_some_trial_worked(exp_dir, table, space.metric)
    say(f"wrote {exp_dir / 'trials.csv'}, trials.md, trials.html and the report {exp_dir / 'report' / 'index.html'}")
    say(f"next: python run_best.py --experiment {exp_dir}")
    return exp_dir


SPACE_FLOOR = 16 << 20  # bytes a search leaves free on its storage at the least (Ray's last save, the tables)


class StorageGuard(Callback):
    """Ends the search as Ctrl-C does while the experiment folder's disk still has room for Ray's last save of the
    experiment state: a disk that fills mid-write leaves state files cut short (Ray copies them into place), which
    --resume cannot read. Room kept: SPACE_FLOOR, or 3 of the largest checkpoint so far per concurrent trial.
    Ray pickles its callbacks with the experiment, so what it found is kept per folder in `short_of_space`."""
    short_of_space = {}  # experiment folder -> (bytes free, bytes wanted) when the guard ended its search

    def __init__(self, exp_dir, concurrent):
        self.exp_dir, self.concurrent, self.largest = str(exp_dir), concurrent, 0

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.largest = max(self.largest, sum(f.stat().st_size for f in Path(checkpoint.path).rglob("*")
                                             if f.is_file()))
        self.check()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.check()

    def check(self):
        free, wanted = shutil.disk_usage(self.exp_dir).free, max(SPACE_FLOOR, 3 * self.concurrent * self.largest)
        stop = signal.getsignal(signal.SIGUSR1)  # Ray Tune's stop handler while fit runs
        if free < wanted and self.exp_dir not in self.short_of_space and callable(stop):
            self.short_of_space[self.exp_dir] = (free, wanted)
            stop(signal.SIGUSR1, None)


class StatusTable(Callback):
    """The console's view of a running search: one table of every trial (status, epochs, the objective's last
    and best value, the searched values), printed when a trial ends and at most every `every` seconds between."""

    def __init__(self, space, exp_dir, every=60.0):
        self.space, self.exp_dir, self.every, self.rows, self.printed = space, str(exp_dir), every, {}, 0.0

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
        row.update({p: trial.config.get(p, "") for p in self.space.mutated})  # what PBT gave it since
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
            why = "budget" if budget_spent(self.exp_dir, self.space.budget) else "ASHA"
            row["status"] += f" ({why}, epoch {row['epoch']})"
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


class _RayStopWatch(logging.Filter):
    """On Ray Tune's logger during fit: notes Ray's "Stop signal received" (Ctrl-C or SIGUSR1, which Ray turns into
    a normal return, some trials possibly marked terminated) and drops Ray's resume hint, which names
    Tuner.restore(...): a CLI user cannot type that, so the CLI prints its own. Its on_sigterm makes SIGTERM
    (a batch scheduler's time limit, `timeout`, Kubernetes) the same ending."""

    def __init__(self):
        super().__init__()
        self.stopped = self.terminated = False

    def on_sigterm(self, signum, frame):
        """Hand SIGTERM to Ray Tune's own stop handler (installed for SIGUSR1 while fit runs)."""
        self.terminated = True
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if not callable(tune_handler):
            raise KeyboardInterrupt  # fit has not installed it yet
        tune_handler(signum, frame)

    def filter(self, record):
        message = record.getMessage()
        self.stopped = self.stopped or "Stop signal received" in message
        return "Tuner.restore" not in message and "Trials did not complete" not in message


def _trial_dirname(trial):
    return f"trial_{trial.trial_id}"  # Ray's default packs every parameter into the folder name


LEDGERS = {}  # experiment folder -> {Ray trial id: epochs it trained}: the budget BudgetStop and the searcher share


def note_epoch(exp_dir, trial_id, result):
    ledger = LEDGERS.setdefault(str(exp_dir), {})
    ledger[trial_id] = max(ledger.get(trial_id, 0), int(result.get("epoch", 0)))


def budget_spent(exp_dir, budget):
    """Have the search's trials trained `budget` epochs in all (never, with no budget)?"""
    return bool(budget) and sum(LEDGERS.get(str(exp_dir), {}).values()) >= budget


class BudgetStop(Stopper):
    """Ends each running trial at its next result once the trials have trained the space's budget of epochs in all
    (the searcher then proposes no more): searches compared at the same budget spend the same compute."""

    def __init__(self, exp_dir, budget):
        self.exp_dir, self.budget = str(exp_dir), budget

    def __call__(self, trial_id, result):
        note_epoch(self.exp_dir, trial_id, result)
        return budget_spent(self.exp_dir, self.budget)

    def stop_all(self):
        return False


class AskTellSearcher(Searcher):
    """TPE or random sampling through Optuna's ask/tell, so that the study records what really happened: every
    epoch's metric is an intermediate value (step = epoch), a trial ASHA or the budget stopped is PRUNED (TPE
    ranks it by its last step, below finished trials), a finished trial's value is its best epoch's metric (the
    quantity trials.csv and run_best.py rank by), a diverged trial is COMPLETE at the worst value seen so far
    (user attribute `diverged`: as FAIL, TPE would ignore it and keep proposing where trials diverge), an errored
    one FAIL. Each Optuna trial carries its Ray trial id as the user attribute `ray_trial_id`. (Ray's
    OptunaSearch tells an early-stopped trial as COMPLETE.)"""

    def __init__(self, space, study, exp_dir):
        super().__init__(metric=space.metric, mode=space.mode)
        self.space, self.study, self.exp_dir = space, study, str(exp_dir)
        self.trials, self.values = {}, {}  # Ray trial id -> Optuna trial, {epoch: metric}
        self.worst = None  # the worst finite metric value any trial reported

    def suggest(self, trial_id):
        if budget_spent(self.exp_dir, self.space.budget):
            return Searcher.FINISHED
        trial = self.study.ask()
        trial.set_user_attr("ray_trial_id", trial_id)
        constants = DefineByRun(self.space)(trial)
        self.trials[trial_id], self.values[trial_id] = trial, {}
        return {**constants, **trial.params}

    def on_trial_result(self, trial_id, result):
        note_epoch(self.exp_dir, trial_id, result)
        value, epoch = result.get(self.metric), int(result.get("epoch", 0))
        if trial_id in self.trials and isinstance(value, (int, float)) and math.isfinite(value) \
                and epoch not in self.values[trial_id]:
            self.trials[trial_id].report(value, step=epoch)
            self.values[trial_id][epoch] = value
            worse = min if self.mode == "max" else max
            self.worst = value if self.worst is None else worse(self.worst, value)

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
        elif status == report.DIVERGED and self.worst is not None:
            trial.set_user_attr("diverged", True)
            self.study.tell(trial, self.worst)
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def save(self, checkpoint_path):
        state = {**self.__dict__, "ledger": LEDGERS.get(self.exp_dir, {})}
        write_whole(checkpoint_path, pickle.dumps(state))  # a full disk leaves the last whole state

    def restore(self, checkpoint_path):
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        LEDGERS[state.get("exp_dir", "")] = state.pop("ledger", {})  # the budget spent before the interruption
        self.__dict__.update(state)


def _searcher(space, exp_dir, seed, warm_start=None):
    """The ask/tell searcher over the experiment's Optuna study (study.new_study)."""
    return AskTellSearcher(space, new_study(space, exp_dir, seed, warm_start), exp_dir)


def _domain(p):
    """A parameter as a Ray Tune search domain (what PBT draws the population from and resamples)."""
    if p["type"] == "categorical":
        return tune.choice(p["choices"])
    if p["type"] == "int":
        return (tune.lograndint if p.get("log") else tune.randint)(p["low"], p["high"] + 1)
    return (tune.loguniform if p.get("log") else tune.uniform)(p["low"], p["high"])


def space_domains(space):
    """A PBT search's param_space: the fixed values and num_epoch, each parameter as a domain."""
    return {**space.fixed, "num_epoch": space.max_epochs, **{k: _domain(p) for k, p in space.params.items()}}


def population(space, seed):
    """The population: the space's points_to_evaluate, then random draws (seeded)."""
    return BasicVariantGenerator(points_to_evaluate=list(space.points_to_evaluate) or None, random_state=seed)


class Within:
    """PBT's explore step, then each mutated value put back within its parameter's range (PBT multiplies by 0.8
    or 1.2 without bounds). A class, so that Ray can pickle the scheduler with the experiment."""

    def __init__(self, params):
        self.bounds = {name: (p["low"], p["high"]) for name, p in params.items()}

    def __call__(self, config):
        for name, (low, high) in self.bounds.items():
            config[name] = min(max(config[name], low), high)
        return config


class GoesOn:
    """Synchronous PBT lets a waiting trial run only while it is behind the next perturbation point. After
    --resume (Ray saves no scheduler's state: PBT starts again from nothing, its next point at the first interval)
    or a trial that ended without a result, every waiting trial can be past that point, and nothing would run
    again. When nothing runs, the point moves to one interval after the trial furthest behind, as it would have
    moved had the search not stopped."""

    def choose_trial_to_run(self, tune_controller):
        chosen = super().choose_trial_to_run(tune_controller)
        trials = tune_controller.get_trials()
        if chosen is None and not any(t.status == Trial.RUNNING for t in trials):
            waiting = [self._trial_state[t].last_train_time for t in trials if t.status in (Trial.PENDING,
                                                                                            Trial.PAUSED)]
            if waiting:
                self._next_perturbation_sync = min(waiting) + self._perturbation_interval
                chosen = super().choose_trial_to_run(tune_controller)
        return chosen


class SyncPBT(GoesOn, PopulationBasedTraining):
    pass


class SyncPB2(GoesOn, PB2):
    pass


def _pbt(space):
    """Synchronous PBT (or PB2) on the epoch: every `interval` epochs, once the whole population has reached
    it, the bottom quantile takes the checkpoints of the top one and perturbs the `mutate` values."""
    mutated = {name: space.params[name] for name in space.mutated}
    common = dict(time_attr="epoch", metric=space.metric, mode=space.mode, synch=True,
                  perturbation_interval=space.pbt["interval"], quantile_fraction=space.pbt["quantile"],
                  custom_explore_fn=Within(mutated), log_config=False)
    if space.scheduler == "pb2":
        try:
            return SyncPB2(hyperparam_bounds={k: [p["low"], p["high"]] for k, p in mutated.items()}, **common)
        except RuntimeError as e:  # PB2's Gaussian process needs scikit-learn
            raise UserError(f"scheduler pb2: {e} (pip install scikit-learn), or use scheduler pbt") from None
    return SyncPBT(hyperparam_mutations={k: _domain(p) for k, p in mutated.items()},
                                   resample_probability=space.pbt["resample_probability"], **common)


def _scheduler(space):
    if space.scheduler in PBT:
        return _pbt(space)
    if space.scheduler == "none":
        return FIFOScheduler()  # every trial trains its max_epochs (or until the budget ends it)
    return ASHAScheduler(time_attr="epoch", metric=space.metric, mode=space.mode, max_t=space.max_epochs,
                         grace_period=space.grace_period, reduction_factor=space.reduction_factor)
