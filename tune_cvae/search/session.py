"""The Ray session a search runs in: joining a cluster or starting a local session with its dashboard, and the
trials' resources planned against what Ray sees, before any trial exists.
"""
import contextlib
import math
import os
import signal
from pathlib import Path

import ray
import torch

from tune_cvae.common import UserError, say

DASHBOARD_PORT = 8265


def start_ray(address=None, num_cpus=None, dashboard=True):
    """Join an existing Ray session/cluster (--address or RAY_ADDRESS) or start a local one with the dashboard
    on 127.0.0.1 (token authentication stays on). A local one even where `ray start` ran on this machine: Ray
    would join that cluster by its address file, and refuse --cpus there."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        say(f"joined the Ray cluster at {address}")
        return
    # the processes Ray starts now inherit the mask: a SIGTERM to the whole process group (Slurm, timeout) then
    # reaches the driver alone, which stops the search and Ray in order (Ray blocks SIGINT there itself); else
    # Ray's GCS dies under it
    with sigterm_blocked():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
                 dashboard_port=DASHBOARD_PORT, log_to_driver=False)
    if dashboard:
        say(f"Ray dashboard: http://127.0.0.1:{DASHBOARD_PORT}  (login token: `ray get-auth-token`)")


@contextlib.contextmanager
def sigterm_blocked():
    """SIGTERM blocked in this thread while the block runs (a SIGTERM that comes then waits until it ends)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


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


def check_local_gpus(gpus, address):
    """A local search that asks for more GPUs than torch sees fails here, before any data is decoded."""
    if address or os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return
    local_gpus = torch.cuda.device_count()
    if gpus > local_gpus:
        raise UserError(f"--gpus {gpus:g}: this machine has {local_gpus} GPU(s) visible to torch; "
                        f"use --gpus {local_gpus} (0 trains on CPUs)")


@ray.remote(num_cpus=0)
def _look(where, probe, token):
    """On one node: can it see the driver's probe in a storage folder, or write into a storage URI? (ok, why)."""
    import socket
    from pathlib import Path
    from tune_cvae.common import UserError as Refused
    here = socket.gethostname()
    if not where.remote:
        try:
            return Path(probe).read_text() == token, f"no {probe} there: a folder of its own at that path"
        except OSError as e:
            return False, f"{e.strerror or e} at {probe}"
    try:
        where.check()
        return True, ""
    except Refused as e:
        return False, f"on {here}: {e}"


def check_nodes_reach(where):
    """Where the cluster has nodes beside the driver's, prove each reaches the storage before any data is decoded:
    a folder must show them the probe the driver writes into it (a folder each node has for itself, or none, does
    not), a URI must take a probe from each. UserError naming the node and what to use instead."""
    import uuid
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    driver = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != driver]
    if not others:
        return
    token = uuid.uuid4().hex
    probe = None if where.remote else where.root / f".tune_cvae_node_probe.{token}"
    made = [] if probe is None else [p for p in (where.root, *where.root.parents) if not p.exists()]
    if probe is not None:
        where.root.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
    try:
        looks = [_look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                 .remote(where, str(probe), token) for n in others]
        answers = ray.get(looks, timeout=120)
    except ray.exceptions.GetTimeoutError:
        raise UserError(f"--storage {where}: a worker node did not answer within 120 s whether it reaches the "
                        f"storage") from None
    finally:
        if probe is not None:
            probe.unlink(missing_ok=True)
        for folder in made:  # nothing left behind: the search makes them again when it starts
            with contextlib.suppress(OSError):
                folder.rmdir()
    for node, (ok, why) in zip(others, answers):
        if not ok:
            raise UserError(f"--storage {where}: worker node {node['NodeManagerAddress']} cannot see it ({why}); "
                            f"use a folder every node mounts at the same path (NFS) or a URI every node reaches "
                            f"(s3://BUCKET/PATH)")


def driver_records(exp_dir):
    """Into a URI experiment's local copy, the trial records Ray's driver keeps in this session (params.json,
    result.json of each trial: its staging folder), where they are not there yet: the table of a search whose
    storage stopped answering. Returns None (nothing to push)."""
    import shutil
    from ray.train.constants import _get_ray_train_session_dir
    staged = sorted(Path(_get_ray_train_session_dir()).glob(f"*/{exp_dir.name}/driver_artifacts"))
    for trial in (staged[-1].glob("trial_*") if staged else []):
        for record in trial.glob("*.json"):
            target = exp_dir / trial.name / record.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(record, target)
