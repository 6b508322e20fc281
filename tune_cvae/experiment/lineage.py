"""A PBT trial's lineage: which trials trained the weights it holds, epoch by epoch, and the schedule (KL weight,
teacher-forcing ratio, lr) each of those epochs trained with.

Every epoch a trial reports `lineage`, e.g. "3f2a0b1c:1-4 9e8d7c6b:5-6": the weights after epoch 6 were trained
for epochs 1-4 by trial 3f2a0b1c (whose checkpoint trial 9e8d7c6b took at an exploit) and for 5-6 by 9e8d7c6b.
The schedule is read back from those trials' records (`trained_schedule`: their epochs.jsonl and result.json).
"""
from pathlib import Path

from tune_cvae.common import UserError
from tune_cvae.experiment.files import trial_dirname, trial_results

COLUMNS = ("epoch", "trained_by", "beta", "tfr", "lr", "teacher_forcing", "val_psnr", "val_psnr_600", "loss",
           "first_mse")


def lineage(history):
    """The lineage text of a run's history (each epoch's `trained_by`)."""
    parts = []
    for h in history:
        who, epoch = h.get("trained_by") or "?", int(h["epoch"])
        if parts and parts[-1][0] == who and parts[-1][2] == epoch - 1:
            parts[-1][2] = epoch
        else:
            parts.append([who, epoch, epoch])
    return " ".join(f"{who}:{first}-{last}" for who, first, last in parts)


def segments(text):
    """[(trial id, first epoch, last epoch)] of a lineage text."""
    out = []
    for part in (text or "").split():
        who, _, epochs = part.rpartition(":")
        first, _, last = epochs.partition("-")
        out.append((who, int(first), int(last)))
    return out


def donors(text):
    """[(epoch, trial id)]: at each exploit, the epoch whose checkpoint was taken and the trial it came from."""
    parts = segments(text)
    return [(last, who) for who, _, last in parts[:-1]]


class LineageError(UserError):
    pass


def assemble(trial_id, epoch, rows_of):
    """The schedule of the weights trial `trial_id` held after `epoch`: per epoch 1..epoch, a dict of COLUMNS from
    the result row of the trial that trained it; `rows_of(trial id)` gives a trial's {epoch: result row}.
    LineageError naming the trial and epochs whose records are missing."""
    rows = rows_of(trial_id)
    if epoch not in rows or not rows[epoch].get("lineage"):
        raise LineageError(f"trial {trial_id}: no lineage recorded for epoch {epoch} (not a PBT trial, or its "
                           f"result.json is cut short)")
    out = []
    for who, first, last in segments(rows[epoch]["lineage"]):
        theirs = rows_of(who)
        missing = [e for e in range(first, last + 1) if e not in theirs]
        if missing:
            raise LineageError(f"trial {who}: the records of its epochs {missing[0]}-{missing[-1]}, which trained "
                               f"trial {trial_id}'s weights, are gone (its folder trial_{who} removed or cut short)")
        out += [{k: theirs[e].get(k) for k in COLUMNS} for e in range(first, last + 1)]
    if [row["epoch"] for row in out] != list(range(1, epoch + 1)):
        raise LineageError(f"trial {trial_id}: its lineage at epoch {epoch} ({rows[epoch]['lineage']}) does not "
                           f"cover epochs 1-{epoch}")
    return out


def trained_schedule(exp_dir, trial_id, epoch):
    """`assemble` over an experiment's trial records: the KL weight, teacher-forcing ratio and lr that PBT trial
    `trial_id`'s weights after `epoch` trained with, epoch by epoch, and who trained each."""
    return assemble(trial_id, epoch, lambda who: {int(r["epoch"]): r for r in
                                                  trial_results(Path(exp_dir) / trial_dirname(who))})
