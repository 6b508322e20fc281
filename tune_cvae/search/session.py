"""The Ray session a search runs in: joining a cluster or starting a local session with its dashboard, and the
trials' resources planned against what Ray sees, before any trial exists.
"""
import contextlib
import math
import os
import signal

import ray
import torch

from tune_cvae.common import UserError, say

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
    with sigterm_blocked():  # the processes Ray starts now inherit the mask: a SIGTERM to the whole process group
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",  # (Slurm, timeout)
                 dashboard_port=DASHBOARD_PORT, log_to_driver=False)  # then reaches the driver alone, which stops
    if dashboard:  # the search and Ray in order (Ray blocks SIGINT there itself); else Ray's GCS dies under it
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
