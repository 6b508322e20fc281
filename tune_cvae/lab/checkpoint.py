"""A run's checkpoint: what it holds (STATE, the one list a Run's state() and load_state() go by), written
atomically, read with weights_only so that a checkpoint from someone else cannot run code.
"""
import re
from pathlib import Path

import torch

from tune_cvae.common import UserError, say, write_whole
from tune_cvae.lab.config import make_config


def _set_cuda_rng(run, value):
    if value is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(value)


# key: (read it from a train.Run, write it back into one; None: set when the Run is made, from the config and data)
STATE = {
    "config": (lambda run: run.config, None),
    "data_dir": (lambda run: run.dataset.root, None),
    "epoch": (lambda run: run.epoch, lambda run, v: setattr(run, "epoch", v)),
    "history": (lambda run: run.history, lambda run, v: setattr(run, "history", list(v))),
    "model": (lambda run: run.model.state_dict(), lambda run, v: run.model.load_state_dict(v)),
    "optimizer": (lambda run: run.opt.state_dict(), lambda run, v: run.opt.load_state_dict(v)),
    "scheduler": (lambda run: run.sched.state_dict(), lambda run, v: run.sched.load_state_dict(v)),
    "rng_python": (lambda run: run.rng.getstate(), lambda run, v: run.rng.setstate(tuple(v))),
    "rng_shuffle": (lambda run: run.shuffle_gen.get_state(), lambda run, v: run.shuffle_gen.set_state(v)),
    "rng_torch": (lambda run: torch.get_rng_state(), lambda run, v: torch.set_rng_state(v)),
    "rng_cuda": (lambda run: torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None, _set_cuda_rng),
}
OPTIONAL = {"data_dir"}  # checkpoints written before it was recorded lack it


def save_checkpoint(state, path):
    """Written whole: a crash mid-write leaves the previous checkpoint intact."""
    write_whole(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path):
    """A checkpoint's state, loaded with weights_only=True: checkpoints travel between users, and a pickle that
    would import anything beyond tensors and plain values (that is, could run code) is refused unread."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint does not exist") from None
    except Exception as e:  # whatever the bytes are, the user gets one line, not the unpickler's traceback
        unsafe = re.search(r"GLOBAL (\S+)", str(e))
        if unsafe:
            raise UserError(f"{path}: refused: loading it would call {unsafe.group(1)} (a checkpoint holds only "
                            f"tensors and plain values)") from None
        raise UserError(f"{path}: not a checkpoint ({type(e).__name__}: "
                        f"{(str(e).strip().splitlines() or [''])[-1][:120]})") from None
    missing = [k for k in STATE if k not in OPTIONAL and (not isinstance(state, dict) or k not in state)]
    if missing:
        raise UserError(f"{path}: not a tune_cvae checkpoint (no {', '.join(missing)})")
    state["config"] = make_config(state["config"])
    return state


def resume_data_dir(state, given):
    """The dataset a resumed run continues on: the one its checkpoint trained on, unless --data names another
    (a moved copy); a checkpoint from before data_dir was recorded demands --data."""
    recorded = state.get("data_dir")
    if given is not None:
        given = Path(given).expanduser()
        if recorded and Path(recorded).resolve() != given.resolve():
            say(f"note: the checkpoint trained on {recorded}; continuing on {given} as --data says")
        return given
    if recorded is None:
        raise UserError("the checkpoint does not record its dataset: pass --data DIR (the folder it trained on)")
    if not Path(recorded).is_dir():
        raise UserError(f"{recorded}: the checkpoint's dataset is gone; pass --data with its new location")
    return recorded
