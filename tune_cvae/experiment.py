"""An experiment folder's life outside Ray: its name and the checks before a search starts, and the search's
ending (the trial table, an interruption with the command that continues it, trials that errored). Ray-free, so
that what a user sees at the start and at the end is tested without a cluster.
"""
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from tune_cvae import DISK_ERRORS, UserError, report, say
from tune_cvae.config import make_config
from tune_cvae.space import PBT, Search, load_space, parse, read_search
from tune_cvae.synthetic import resolve_data_dir


def new_experiment(space_name, data_dir, name, storage, seed, overrides=None, warm_start=None):
    """(experiment folder, Search) of a new search; nothing is written yet. `overrides`: the run_search flags
    that replace a space's values (samples, max_epochs, searcher, scheduler, budget; None keeps the space's)."""
    if name is not None:
        check_name(name)
    space = load_space(space_name)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    samples, max_epochs = overrides.pop("samples", None), overrides.pop("max_epochs", None)
    if samples is not None:
        if samples < len(space.points_to_evaluate):
            raise UserError(f"--samples {samples}: {space.path} evaluates {len(space.points_to_evaluate)} start "
                            f"points first; pass at least that many")
        space.num_samples = samples
    if max_epochs is not None:
        space.max_epochs = max_epochs
        space.grace_period = min(space.grace_period, max_epochs)
    if overrides.get("scheduler") in PBT:
        overrides.setdefault("searcher", "random")  # PBT's population is drawn at random (it takes no searcher)
    if overrides or samples is not None or max_epochs is not None:  # checked with the rest of the space
        space = parse({**space.to_dict(), **overrides}, f"{space.path} with the flags")
    name = name or f"{Path(space.path).stem[:40]}-{time.strftime('%Y%m%d-%H%M%S')}"  # 40 characters <= 160 bytes
    exp_dir = storage / name
    if exp_dir.exists():
        raise UserError(f"{exp_dir}: already exists; pass --resume to continue it or another --name")
    if warm_start is not None:
        if space.scheduler in PBT:
            raise UserError(f"--warm-start: scheduler {space.scheduler} draws its population at random, so an "
                            f"earlier study has nothing to tell it; leave --warm-start out")
        warm_start = str(check_warm_start(warm_start, exp_dir, space))
    return exp_dir, Search(space, str(resolve_data_dir(data_dir)), seed, {}, warm_start)


def check_warm_start(earlier, exp_dir, space):
    """--warm-start EXPERIMENT: an experiment folder with an Optuna study whose objective is this search's."""
    earlier = Path(earlier).expanduser().resolve()
    journal = earlier / report.JOURNAL
    if not journal.is_file():
        raise UserError(f"--warm-start {earlier}: not an experiment folder of run_search.py (no {report.JOURNAL})")
    if earlier == exp_dir.resolve():
        raise UserError(f"--warm-start {earlier}: that is the new experiment itself")
    old = read_search(earlier).space
    if (old.metric, old.mode) != (space.metric, space.mode):
        raise UserError(f"--warm-start {earlier}: its search ranked by {old.metric} ({old.mode}), this one by "
                        f"{space.metric} ({space.mode})")
    return earlier


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


def cpu_frames_per_s(config, dataset, threads):
    """Training frames per second of `config` on this machine's CPU with `threads` torch threads: one teacher-forced
    batch timed after a warm-up batch."""
    from tune_cvae.train import Run, epoch_batches, train_steps
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = Run({**config, "partial": 1.0, "fast_train": False}, dataset)
        batches = epoch_batches(run, 0)[:2]  # check_dataset made sure of one at least
        train_steps(run, batches[:1], 0.0, True)
        t0 = time.perf_counter()
        train_steps(run, batches[-1:], 0.0, True)
        return batches[-1].numel() * config["train_vi_len"] / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


def resume_command(exp_dir, storage):
    command = f"python run_search.py --resume --name {exp_dir.name}"
    return command if storage == Path("ray_results").resolve() else f"{command} --storage {storage}"


def written_table(exp_dir):
    """report.write's trial table, or on a disk that cannot take it the same table unwritten (with a warning)."""
    try:
        return report.write(exp_dir)
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        say(f"warning: {exp_dir}: {e.strerror}: the trial table and report were not written")
        return report.collect(exp_dir)


def cut_trials(exp_dir):
    """Ray trial ids the study never heard the end of (ASHA's stops were told as PRUNED, finished trials as
    COMPLETE): the trials an interruption cut off, whatever status Ray saved for them."""
    study = optuna.load_study(study_name=exp_dir.name, storage=report.study_storage(exp_dir))
    return [t.user_attrs["ray_trial_id"] for t in study.trials
            if t.state == TrialState.RUNNING and "ray_trial_id" in t.user_attrs]


class Interrupted(Exception):
    """Ctrl-C, SIGUSR1, SIGTERM or a disk running full ended the search; the message says how to continue it.
    run_search.py exits with `exit_status`: 130 after Ctrl-C and 143 after SIGTERM (128 + the signal's number, as
    a shell reports a process those signals end), 1 when the disk ran full."""

    def __init__(self, message, exit_status):
        super().__init__(message)
        self.exit_status = int(exit_status)


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
