"""A search, start to end: the experiment folder and its checks, the dataset decoded once and shared, the Tuner
(the space's searcher, scheduler and budget, or restored from the folder), and the search's endings.

The experiment folder (STORAGE/NAME) holds Ray's trial folders (checkpoints, TensorBoard events), the Optuna
study (optuna.journal, for optuna-dashboard), search.yaml (what run_best.py and the report need) and the tables.
"""
import logging
import os
import pickle
import shlex
import shutil
import signal
import warnings

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from tune_cvae.common import DISK_ERRORS, UserError, say
from tune_cvae.experiment.ending import (Interrupted, check_some_trial_worked, unfinished_trials,
                                         written_table)
from tune_cvae.experiment.files import (INTERRUPTED, INTERRUPTED_FILE, JOURNAL, REPORT_DIR, SEARCH_FILE,
                                        set_aside_forgotten, trial_dirname, write_interrupted)
from tune_cvae.experiment import wandb_log
from tune_cvae.experiment.record import read_search, write_search
from tune_cvae.experiment.space import PBT
from tune_cvae.experiment.start import check_name, new_experiment, resume_command, warn_cpu_duration
from tune_cvae.experiment.storage import Storage, shown
from tune_cvae.experiment.tables import TABLE_FILES, collect, console
from tune_cvae.lab.config import make_config
from tune_cvae.lab.data import load_dataset
from tune_cvae.lab.train import check_dataset
from tune_cvae.search.budget import Budget
from tune_cvae.search.callbacks import PushRecords, StatusTable, StorageGuard
from tune_cvae.search.pbt import make_pbt, population, space_domains
from tune_cvae.search.searcher import make_searcher
from tune_cvae.search.session import check_local_gpus, check_nodes_reach, driver_records, plan_resources, start_ray
from tune_cvae.search.trainable import named_trial
from tune_cvae.search.wandb_runs import WandbRuns, summary_run

__all__ = ["Interrupted", "run"]


def reopen_experiment(name, where):
    """(experiment folder, Search) of an interrupted search, to resume it: a URI's records come down into its local
    copy first (its Optuna journal among them)."""
    if not name:
        raise UserError("--resume needs --name of the experiment to continue")
    check_name(name)
    if not where.has(name) or not tune.Tuner.can_restore(where.uri(name)):
        raise UserError(f"{shown(where.uri(name))}: no search to resume there")
    exp_dir = where.pull(name)
    if not (exp_dir / SEARCH_FILE).is_file():
        raise UserError(f"{shown(where.uri(name))}: no search to resume there (no {SEARCH_FILE})")
    return exp_dir, read_search(exp_dir)


def build_tuner(where, exp_dir, record, trainable, concurrent, resume, verbose, reuse_actors=False):
    """A Tuner restored from `exp_dir`, or a new one (the space's searcher, scheduler and budget) whose
    search.yaml is written now. Ray's own console output is off (a config and a result box per trial);
    StatusTable prints one table instead. Ray's TensorBoard logger is left out, so TensorBoard shows one run per
    trial (the trainable's)."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    if resume:
        try:
            return tune.Tuner.restore(where.uri(exp_dir.name), trainable=trainable, resume_unfinished=True,
                                      resume_errored=True)
        except (ValueError, EOFError, pickle.UnpicklingError) as e:  # a state file cut short or damaged
            raise UserError(f"{exp_dir}: Ray's saved state there cannot be read ({type(e).__name__}: "
                            f"{str(e)[:120]}); this search cannot be resumed") from None
        except (ModuleNotFoundError, AttributeError) as e:  # Ray pickles classes by their module path
            raise UserError(f"{exp_dir}: this search was started by an earlier version of tune_cvae, whose classes "
                            f"have moved ({e}); it cannot be resumed, but run_best.py and the report read it, and "
                            f"--warm-start {exp_dir} starts a new search from its trials") from None
    space = record.space
    scheduler = make_scheduler(space)  # before the folder: a scheduler that cannot be built leaves nothing behind
    if where.remote:  # a new search's local copy starts empty (one left from an experiment gone from storage)
        shutil.rmtree(exp_dir, ignore_errors=True)
    exp_dir.mkdir(parents=True)
    write_search(exp_dir, record)
    where.push(exp_dir.name, [SEARCH_FILE])
    budget = Budget(space.budget)
    if space.scheduler in PBT:  # Ray's PBT refuses a searcher: its population is drawn from a param_space
        search_alg, param_space = population(space, record.seed), space_domains(space)
        keep = tune.CheckpointConfig(num_to_keep=space.pbt["interval"] + 2)  # the newest: a donor's stays there
    else:  # until the trials that exploit it have loaded it (an older one kept for its score would not do)
        search_alg, param_space = make_searcher(space, exp_dir, record.seed, budget, record.warm_start), None
        keep = tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=space.metric,
                                     checkpoint_score_order=space.mode)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune.TuneConfig(
        search_alg=search_alg, scheduler=scheduler,
        num_samples=space.num_samples, max_concurrent_trials=concurrent,
        reuse_actors=reuse_actors and space.scheduler not in PBT,
        trial_dirname_creator=trial_folder),
        run_config=tune.RunConfig(
            name=exp_dir.name, storage_path=where.ray_storage(), verbose=0, stop=budget if space.budget else None,
            sync_config=tune.SyncConfig(sync_artifacts=True),  # the trials' own records, from whichever node
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), StorageGuard(exp_dir, concurrent, where),
                       PushRecords(where, exp_dir.name)] + ([StatusTable(space, budget)] if verbose else [])
            + ([WandbRuns(space.wandb, where, exp_dir, space)] if space.wandb else []),
            checkpoint_config=keep, failure_config=tune.FailureConfig(max_failures=1)))


def run(space_name="kl_tfr.yaml", *, data_dir=None, gpus=0, gpus_per_trial=None, cpus_per_trial=1, samples=None,
        max_epochs=None, searcher=None, scheduler=None, budget=None, warm_start=None, name=None,
        storage="ray_results", address=None, resume=False, seed=0, num_cpus=None, dashboard=True, verbose=1,
        reuse_actors=False, wandb=None):
    """The whole search; returns the experiment's local folder (a URI's local copy). UserError for anything the
    user can fix. samples, max_epochs, searcher, scheduler and budget replace the space's values (None keeps
    them). `storage`: a folder or a URI (experiment/storage.py). `reuse_actors`: trials after the first run in
    their predecessors' processes (faster starts; the Ray dashboard then names each process after its first
    trial), except under PBT. `wandb`: a W&B project for the trials' runs (else the space's `wandb:`, if any)."""
    if wandb:
        wandb_log.check()  # before any work: W&B installed, a key to log in with
    where = Storage(storage)
    where.check()  # before any work: writable, room left, credentials accepted
    if resume:
        exp_dir, record = reopen_experiment(name, where)
    else:
        exp_dir, record = new_experiment(space_name, data_dir, name, where, seed, {
            "samples": samples, "max_epochs": max_epochs, "searcher": searcher, "scheduler": scheduler,
            "budget": budget}, warm_start)
    space = record.space
    if wandb:
        space.wandb = {**(space.wandb or {}), "project": wandb}
    elif space.wandb:  # the space's own wandb:
        wandb_log.check()
    check_local_gpus(gpus, address)
    if address or os.environ.get("RAY_ADDRESS"):  # a cluster: each node must reach the storage, before the data
        start_ray(address, num_cpus, dashboard)
        check_nodes_reach(where)
    dataset = shared_data(record)
    start_ray(address, num_cpus, dashboard)
    record.resources, concurrent = plan_resources(gpus, gpus_per_trial, cpus_per_trial, space.num_samples)
    warn_cpu_duration(space, record.resources, dataset, concurrent)
    named = named_trial([p for p in space.params if p not in space.mutated], strip=bool(space.wandb))
    trainable = tune.with_resources(tune.with_parameters(named, arrays=dataset.as_arrays()), record.resources)
    watching(where, exp_dir, space)
    tuner = build_tuner(where, exp_dir, record, trainable, concurrent, resume, verbose, reuse_actors)
    say(f"search: {space.searcher} + {space.scheduler}, {space.num_samples} trials of up to {space.max_epochs} epochs"
        + (f" or {space.budget} trial-epochs in all" if space.budget else "") + f", {concurrent} at a time, "
        f"{record.resources['cpu']:g} CPU + {record.resources['gpu']:g} GPU each; experiment "
        f"{shown(where.uri(exp_dir.name))}")
    grid, watch = fit(tuner, exp_dir, where)
    return finish(where, exp_dir, grid, watch, space)


def shared_data(record):
    """The search's dataset, every split checked and decoded once on the driver (then shared with every trial),
    checked against the space's config."""
    dataset = load_dataset(record.data_dir)
    check_dataset(make_config(record.space.trial_config({})), dataset)
    say(f"data: {dataset.root} ({dataset.train_img.shape[0]} train frames, {dataset.val_img.shape[0]} val frames, "
        f"{dataset.test_first.shape[0]} test videos)")
    return dataset


def watching(where, exp_dir, space):
    """Where to watch the search: TensorBoard and optuna-dashboard over its folder (a URI's local copy, which
    `python -m tune_cvae report URI` refreshes)."""
    refresh = f"`python -m tune_cvae report {shown(where.uri(exp_dir.name))}` downloads its records into {exp_dir}; " \
        if where.remote else ""
    say(f"TensorBoard: {refresh}tensorboard --logdir {exp_dir}")
    if space.scheduler not in PBT:
        say(f"Optuna study: optuna-dashboard {exp_dir / JOURNAL}")


def fit(tuner, exp_dir, where):
    """tuner.fit() with Ctrl-C, SIGUSR1 and SIGTERM as endings: Ray saves the experiment state one last time and
    returns. Returns (the ResultGrid, the RayStopWatch that saw how it ended)."""
    watch = RayStopWatch()
    logger = logging.getLogger("ray.tune.tune")
    logger.addFilter(watch)
    previous = signal.signal(signal.SIGTERM, watch.on_sigterm)  # Ray's own handler exits mid-save
    (exp_dir / INTERRUPTED_FILE).unlink(missing_ok=True)  # a resumed search starts uninterrupted
    try:
        with warnings.catch_warnings():  # ASHA's cutoff over rungs whose results are all NaN (diverged trials)
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            warnings.filterwarnings("ignore", "Consider boosting PBT performance")  # actor reuse: not for us
            grid = tuner.fit()
    except OSError as e:  # the disk filled (or went read-only), or the URI stopped answering, faster than
        trouble = storage_trouble(e, exp_dir, where)  # StorageGuard could see it coming; or Ray read it after
        if trouble is None:
            raise
        say(console(written_table(exp_dir), read_search(exp_dir).space.metric), result=True)
        raise Interrupted(f"{trouble[0]}; {trouble[1]} continue it with: {resume_command(exp_dir.name, where)}",
                          1) from None
    finally:
        logger.removeFilter(watch)
        signal.signal(signal.SIGTERM, previous)
    return grid, watch


def finish(where, exp_dir, grid, watch, space):
    """The search's ending: the trial table (written, pushed to a URI, and printed), then the next command; an
    interrupted search, or one its storage guard stopped, raises Interrupted with the command that continues it."""
    name, command = exp_dir.name, resume_command(exp_dir.name, where)
    trouble = StorageGuard.trouble.pop(str(exp_dir), None)
    records = pull_records(where, name) if not trouble else driver_records(exp_dir) if where.remote else None
    ended = grid.num_terminated + grid.num_errors >= space.num_samples or budget_spent(exp_dir, space.budget)
    interrupted = watch.stopped or not ended
    set_aside_forgotten(exp_dir, {os.path.basename(r.path.rstrip("/")) for r in grid})
    if interrupted:
        write_interrupted(exp_dir, unfinished_trials(exp_dir))
    table = written_table(exp_dir)
    if space.wandb and not table.empty:
        summary_run(space.wandb, exp_dir, table, exp_dir / REPORT_DIR)
    if records is not None:
        push_records(where, name)
    say(console(table, space.metric), result=True)
    done = int((table["status"] != INTERRUPTED).sum()) if not table.empty else 0
    if trouble:
        raise Interrupted(f"{trouble[0]}; {done} of {space.num_samples} trials done; {trouble[1]} continue it "
                          f"with: {command}", 1)
    if interrupted:
        raise Interrupted(f"search interrupted with {done} of {space.num_samples} trials done; continue it with: "
                          f"{command}", 128 + (signal.SIGTERM if watch.terminated else signal.SIGINT))
    check_some_trial_worked(exp_dir, table, space.metric)
    say(f"wrote {exp_dir / 'trials.csv'}, trials.md, trials.html and the report {exp_dir / 'report' / 'index.html'}"
        + (f", and into {shown(where.uri(name))}" if where.remote else ""))
    say(f"next: python run_best.py --experiment {shlex.quote(shown(where.uri(name)))}")
    return exp_dir


def storage_trouble(error, exp_dir, where):
    """(what happened, what to do) when `error` is the storage failing the search: a folder's disk full or
    read-only, a URI that stopped answering (the table then shows the records Ray's driver kept); else None."""
    if not where.remote:
        return (f"{exp_dir}: {error.strerror} (the search stopped there)", "free space, then") \
            if error.errno in DISK_ERRORS else None
    if where.reachable(exp_dir.name):
        return None
    driver_records(exp_dir)
    return StorageGuard.trouble.pop(str(exp_dir), None) or (
        f"{where}: the storage stopped answering (the search stopped there)", "once it answers again,")


def pull_records(where, name):
    """A URI experiment's trial records (not their checkpoints) into its local copy, for the table; None with a
    warning where the storage does not answer (the table is then the local copy's)."""
    try:
        return where.pull(name)
    except UserError as e:
        say(f"warning: {e}: the table shows the records already here")
        return None


def push_records(where, name):
    """The table, the report, the journal and interrupted.json up into a URI experiment (a warning on failure)."""
    try:
        where.push(name, [*TABLE_FILES, REPORT_DIR, JOURNAL, INTERRUPTED_FILE, "wandb"])
    except UserError as e:
        say(f"warning: {e}: the table and report stay in {where.folder(name)}")


def trial_folder(trial):
    """Ray's name for a trial's folder: its id only (Ray's default packs every parameter into the name)."""
    return trial_dirname(trial.trial_id)


def budget_spent(exp_dir, budget):
    """Have the experiment's trials, as their files record them, trained `budget` epochs in all (never, with no
    budget)? The files are the truth after a restore too."""
    if not budget:
        return False
    table = collect(exp_dir)
    return not table.empty and int(table["epochs"].sum()) >= budget


class RayStopWatch(logging.Filter):
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


def make_scheduler(space):
    if space.scheduler in PBT:
        return make_pbt(space)
    if space.scheduler == "none":
        return FIFOScheduler()  # every trial trains its max_epochs (or until the budget ends it)
    return ASHAScheduler(time_attr="epoch", metric=space.metric, mode=space.mode, max_t=space.max_epochs,
                         grace_period=space.grace_period, reduction_factor=space.reduction_factor)
