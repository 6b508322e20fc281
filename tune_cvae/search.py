"""Builds and runs the Tuner: OptunaSearch (TPE) + ASHA over a YAML space, the dataset decoded once and shared.

The experiment folder (STORAGE/NAME) holds Ray's trial folders (checkpoints, TensorBoard events), the Optuna
study (optuna.journal, for optuna-dashboard), search.yaml (what run_best.py and report.py need) and the tables.
"""
import math
import os
import time
import warnings
from pathlib import Path

import optuna
import ray
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from tune_cvae import UserError, report, say
from tune_cvae import data as lab4
from tune_cvae import space as spaces
from tune_cvae.synthetic import resolve_data
from tune_cvae.train import check_data, make_config
from tune_cvae.trainable import train_trial

SEARCH_FILE = report.SEARCH_FILE
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


def run(space_name, data=None, gpus=0, gpus_per_trial=None, cpus_per_trial=1, samples=None, max_epochs=None,
        name=None, storage="ray_results", address=None, resume=False, seed=0, num_cpus=None, dashboard=True,
        verbose=1):
    """The whole search; returns the experiment folder. UserError for anything the user can fix."""
    storage = Path(storage).expanduser().resolve()
    if resume:
        if not name:
            raise UserError("--resume needs --name of the experiment to continue")
        exp_dir = storage / name
        if not (exp_dir / SEARCH_FILE).is_file() or not tune.Tuner.can_restore(str(exp_dir)):
            raise UserError(f"{exp_dir}: no search to resume there")
        saved = report.read_search(exp_dir)
        space = spaces.parse(saved["space"], saved["space_path"])
        data_root = Path(saved["data"])
    else:
        space = spaces.load(space_name)
        if samples is not None:
            space.num_samples = samples
        if max_epochs is not None:
            space.max_epochs = max_epochs
            space.grace_period = min(space.grace_period, max_epochs)
        name = name or f"{Path(space.path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        exp_dir = storage / name
        if exp_dir.exists():
            raise UserError(f"{exp_dir}: already exists; pass --resume to continue it or another --name")
        data_root = resolve_data(data)
    if not (address or os.environ.get("RAY_ADDRESS") or ray.is_initialized()):
        local_gpus = torch.cuda.device_count()  # a local run fails here already, before decoding anything
        if gpus > local_gpus:
            raise UserError(f"--gpus {gpus:g}: this machine has {local_gpus} GPU(s) visible to torch; "
                            f"use --gpus {local_gpus} (0 trains on CPUs)")
    dataset = lab4.load(data_root)  # every split checked and decoded once, before Ray or any trial starts
    check_data(make_config(space.trial_config({})), dataset)
    say(f"data: {dataset.root} ({dataset.train_img.shape[0]} train frames, {dataset.val_img.shape[0]} val frames, "
        f"{dataset.test_first.shape[0]} test videos)")
    start_ray(address, num_cpus, dashboard)
    resources, concurrent = plan_resources(gpus, gpus_per_trial, cpus_per_trial, space.num_samples)
    trainable = tune.with_resources(tune.with_parameters(train_trial, arrays=dataset.as_arrays()), resources)
    say(f"TensorBoard: tensorboard --logdir {exp_dir}")
    say(f"Optuna study: optuna-dashboard {exp_dir / 'optuna.journal'}")
    if resume:
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        exp_dir.mkdir(parents=True)
        (exp_dir / SEARCH_FILE).write_text(yaml.safe_dump({
            "space_path": space.path, "space": _space_dict(space), "data": str(data_root), "seed": seed,
            "resources": resources}, sort_keys=False))
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=_searcher(space, exp_dir, name, seed), scheduler=_scheduler(space),
            num_samples=space.num_samples, max_concurrent_trials=concurrent, trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=str(storage), verbose=verbose,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=space.metric,
                                                        checkpoint_score_order=space.mode),
                failure_config=tune.FailureConfig(max_failures=1)))
    say(f"search: {space.num_samples} trials of up to {space.max_epochs} epochs, {concurrent} at a time, "
        f"{resources['cpu']:g} CPU + {resources['gpu']:g} GPU each; experiment folder {exp_dir}")
    tuner.fit()
    table = report.write(exp_dir)
    print(report.console(table, space.metric))
    return exp_dir


def _trial_dirname(trial):
    return f"trial_{trial.trial_id}"  # Ray's default packs every parameter into the folder name


def _space_dict(space):
    return {"metric": space.metric, "mode": space.mode, "num_samples": space.num_samples,
            "max_epochs": space.max_epochs, "grace_period": space.grace_period,
            "reduction_factor": space.reduction_factor, "fixed": space.fixed, "params": space.params,
            "points_to_evaluate": space.points_to_evaluate}


def _searcher(space, exp_dir, name, seed):
    """TPE (seeded, multivariate), the study kept in a journal file in the experiment folder."""
    storage = JournalStorage(JournalFileBackend(str(exp_dir / "optuna.journal")))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's `group`
    return OptunaSearch(space=spaces.DefineByRun(space), metric=space.metric, mode=space.mode,
                        points_to_evaluate=space.points_to_evaluate or None, study_name=name, storage=storage,
                        sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                                           n_startup_trials=min(10, max(2, space.num_samples // 3))))


def _scheduler(space):
    return ASHAScheduler(time_attr="epoch", metric=space.metric, mode=space.mode, max_t=space.max_epochs,
                         grace_period=space.grace_period, reduction_factor=space.reduction_factor)
