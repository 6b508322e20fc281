"""A search's ending outside Ray: the trial table written (or shown where the disk is full), the trials an
interruption cut off, Interrupted with the command that continues the search, and trials that errored. Ray-free, so
that what a user sees at the end is tested without a cluster.
"""
from pathlib import Path

from tune_cvae.common import DISK_ERRORS, UserError, say
from tune_cvae.experiment import report
from tune_cvae.experiment.files import ERROR_FILE, ERRORED, USABLE, study_storage, trial_dirname
from tune_cvae.experiment.tables import collect


def written_table(exp_dir):
    """report.write's trial table, or on a disk that cannot take it the same table unwritten (with a warning)."""
    try:
        return report.write(exp_dir)
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        say(f"warning: {exp_dir}: {e.strerror}: the trial table and report were not written")
        return collect(exp_dir)


def unfinished_trials(exp_dir):
    """Ray trial ids the study never heard the end of (ASHA's stops were told as PRUNED, finished trials as
    COMPLETE): the trials an interruption cut off, whatever status Ray saved for them."""
    import optuna
    from optuna.trial import TrialState
    study = optuna.load_study(study_name=exp_dir.name, storage=study_storage(exp_dir))
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
    errored = int((table["status"] == ERRORED).sum()) if not table.empty else 0
    why = first_error(exp_dir)
    if not table.empty and table["status"].isin(USABLE).any():
        if errored:
            say(f"warning: {errored} of {len(table)} trials errored; {why}")
        return
    counts = table["status"].value_counts().to_dict() if not table.empty else {}
    raise UserError(f"{exp_dir}: no trial finished an epoch with a finite {metric} "
                    f"({', '.join(f'{n} {s}' for s, n in counts.items()) or 'no trials ran'})"
                    + (f"; {why}" if why else ""))


def first_error(exp_dir):
    """'first error in FILE: its last line' of the trial that errored first, or '' where none did."""
    errors = sorted(Path(exp_dir).glob(f"{trial_dirname('*')}/{ERROR_FILE}"), key=lambda p: p.stat().st_mtime)
    if not errors:
        return ""
    lines = errors[0].read_text(errors="replace").strip().splitlines() or ["(empty)"]
    return f"first error in {errors[0]}: {lines[-1][:200]}"
