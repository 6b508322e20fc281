"""A search's start outside Ray: the experiment's name and folder, its space with the flags applied, the warm
start, the duration warning for a template-size model on CPUs, and the command that resumes it. Ray-free, so that
what a user sees at the start is tested without a cluster.
"""
import shlex
import time
from pathlib import Path

from tune_cvae.common import UserError, say
from tune_cvae.experiment.files import JOURNAL, trial_dirname
from tune_cvae.experiment.record import Search, read_search
from tune_cvae.experiment.space import PBT
from tune_cvae.experiment.space_yaml import load_space, parse
from tune_cvae.experiment.storage import Storage, experiment_at, shown
from tune_cvae.lab.config import make_config
from tune_cvae.lab.synthetic import resolve_data_dir
from tune_cvae.lab.train import cpu_frames_per_s


def new_experiment(space_name, data_dir, name, storage, seed, overrides=None, warm_start=None):
    """(experiment folder, Search) of a new search in `storage` (a Storage, or a folder); nothing is written yet.
    `overrides`: the run_search flags that replace a space's values (samples, max_epochs, searcher, scheduler,
    budget; None keeps the space's)."""
    storage = storage if isinstance(storage, Storage) else Storage(storage)
    if name is not None:
        check_name(name)
    space = with_flags(load_space(space_name), overrides)
    name = name or f"{Path(space.path).stem[:40]}-{time.strftime('%Y%m%d-%H%M%S')}"  # 40 characters <= 160 bytes
    if storage.has(name):
        raise UserError(f"{storage.uri(name) if not storage.remote else shown(storage.uri(name))}: already exists; "
                        f"pass --resume to continue it or another --name")
    if warm_start is not None:
        if space.scheduler in PBT:
            raise UserError(f"--warm-start: scheduler {space.scheduler} draws its population at random, so an "
                            f"earlier study has nothing to tell it; leave --warm-start out")
        warm_start = check_warm_start(warm_start, storage.folder(name), space)
    return storage.folder(name), Search(space, str(resolve_data_dir(data_dir)), seed, {}, warm_start)


def with_flags(space, overrides):
    """The space with the run_search flags that replace its values (None keeps the space's), checked with the
    rest of it."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    samples, max_epochs = overrides.pop("samples", None), overrides.pop("max_epochs", None)
    if samples is not None:
        first = len(space.points_to_evaluate) + len(space.portfolio)
        if samples < first:
            raise UserError(f"--samples {samples}: {space.path} evaluates {first} start points"
                            f"{' with its portfolio' if space.portfolio else ''} first; pass at least that many")
        space.num_samples = samples
    if max_epochs is not None:
        space.max_epochs = max_epochs
        space.grace_period = min(space.grace_period, max_epochs)
    if overrides.get("scheduler") in PBT:
        overrides.setdefault("searcher", "random")  # PBT's population is drawn at random (it takes no searcher)
    if overrides or samples is not None or max_epochs is not None:  # checked with the rest of the space
        space = parse({**space.to_dict(), **overrides}, f"{space.path} with the flags")
    return space


def check_warm_start(given, exp_dir, space):
    """--warm-start EXPERIMENT (a folder or a URI): an experiment with an Optuna study whose objective is this
    search's. Returns the local folder that holds its study (a URI's local copy)."""
    where, name = experiment_at(given, "--warm-start")
    earlier = where.pull(name, skip=(trial_dirname(""),)) if where.remote else where.folder(name)
    journal = earlier / JOURNAL
    if not journal.is_file():
        raise UserError(f"--warm-start {earlier}: not an experiment folder of run_search.py (no {JOURNAL})")
    if earlier == exp_dir.resolve():
        raise UserError(f"--warm-start {earlier}: that is the new experiment itself")
    old = read_search(earlier).space
    if (old.metric, old.mode) != (space.metric, space.mode):
        raise UserError(f"--warm-start {earlier}: its search ranked by {old.metric} ({old.mode}), this one by "
                        f"{space.metric} ({space.mode})")
    return str(earlier)


NAME_BYTES = 200  # an experiment's folder name: one path component, which file systems cap at 255 bytes


def check_name(name):
    """An experiment name is one folder name inside --storage, never a path that leads out of it."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UserError(f"--name {name!r}: must be one folder name inside --storage (no '/', not '.' or '..')")
    if len(name.encode()) > NAME_BYTES:
        raise UserError(f"--name {name[:20]!r}...: {len(name.encode())} bytes; at most {NAME_BYTES} (a folder name)")


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


def resume_command(name, storage):
    """The command that continues experiment `name` of `storage` (its credentials hidden, quoted for a shell)."""
    command = f"python run_search.py --resume --name {shlex.quote(name)}"
    default = not storage.remote and storage.root == Path("ray_results").resolve()
    return command if default else f"{command} --storage {shlex.quote(str(storage))}"
