"""Weights & Biases, where many of the lab's users keep their runs: optional (`make wandb`, or pip install wandb),
never imported unless --wandb or a space's `wandb:` asks. Its mode (WANDB_MODE=offline logs to files only) and
its key (`wandb login`, WANDB_API_KEY) are W&B's own, never printed or written by this project. A W&B failure is
one warning, and the search or the retraining goes on: what W&B kept in EXPERIMENT/wandb/ can be uploaded later
with `wandb sync`.
"""
import hashlib
import os
import re
from pathlib import Path

from tune_cvae.common import UserError, say
from tune_cvae.experiment.files import EPOCH_SCALARS

INSTALL = "make wandb (or: pip install wandb)"
SETTINGS_KEYS = ("project", "entity", "group", "tags")
STRIP_FILE = "val_strip.png"  # in a trial's records: its last validation's image strip, for W&B


def scalars(result):
    """An epoch's numbers W&B plots (TensorBoard's keys), from a result or a record."""
    return {k: result[k] for k in EPOCH_SCALARS if isinstance(result.get(k), (int, float))}


def check(flag="--wandb"):
    """Before any work: W&B importable, and outside offline mode a key to log in with; else one line saying what
    to install or set."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise UserError(f"{flag}: W&B is not installed here: {INSTALL}") from None
    if os.environ.get("WANDB_MODE", "online").lower() in ("offline", "disabled", "dryrun") or \
            os.environ.get("WANDB_API_KEY"):
        return
    host = re.sub(r"^https?://", "", os.environ.get("WANDB_BASE_URL", "api.wandb.ai")).rstrip("/")
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and host in netrc.read_text(errors="ignore"):
        return
    raise UserError(f"{flag}: no W&B key here: run `wandb login`, set WANDB_API_KEY, or set WANDB_MODE=offline to "
                    f"log into files for `wandb sync`")


def run_id(experiment, what):
    """A W&B run's id, the same whenever the same trial (or summary) of the same experiment logs: a resumed trial
    continues its run."""
    return f"{hashlib.sha256(str(experiment).encode()).hexdigest()[:10]}-{re.sub(r'[^A-Za-z0-9_-]', '_', what)}"


_WARNED = set()


def safely(what, fn, *args, **kwargs):
    """fn(*args, **kwargs), or None with one warning per kind of failure: W&B never stops the work."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # W&B's own errors, a network outage, a full disk under its files
        kind = f"{what}: {type(e).__name__}"
        if kind not in _WARNED:
            _WARNED.add(kind)
            say(f"warning: W&B {what} failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                f"the work goes on, and what W&B kept can be uploaded later with `wandb sync`")
        return None


INIT_TIMEOUT_S = 20  # a W&B server that does not answer by then is taken as down
_OFFLINE = {"since": None}  # set once W&B did not answer: later runs go to offline files at once


def open_run(settings, folder, run, **kwargs):
    """A W&B run (resumed where `run` already logged), its files in FOLDER/wandb/; where W&B does not answer,
    this run and the later ones are written offline, for `wandb sync`; None where even that fails."""
    import wandb
    folder.mkdir(parents=True, exist_ok=True)

    def init(mode):
        return safely("init", wandb.init, project=settings.get("project"), entity=settings.get("entity"),
                      tags=settings.get("tags"), id=run, resume="allow", reinit="create_new", dir=str(folder),
                      mode=mode, settings=wandb.Settings(silent=True, console="off", init_timeout=INIT_TIMEOUT_S),
                      **kwargs)

    got = init("offline" if _OFFLINE["since"] else None)
    if got is None and not _OFFLINE["since"] and os.environ.get("WANDB_MODE", "online").lower() == "online":
        _OFFLINE["since"] = run
        say(f"warning: W&B did not answer: the runs go into offline files in {folder / 'wandb'}; upload them "
            f"later with `wandb sync {folder / 'wandb'}/offline-run-*`")
        got = init("offline")
    return got


def run_best_run(settings, exp_dir, trial_id, history, out, summary):
    """run_best's retraining as a run in its search's group, linked to the winning trial's run: its curves, the
    per-frame validation PSNR, the test videos' GIFs and the scored submission as an artifact."""
    import wandb
    run = open_run(settings, exp_dir, run_id(exp_dir.name, f"run_best-{trial_id}"), name=f"run_best {trial_id}",
                   group=settings.get("group") or exp_dir.name, job_type="run_best",
                   config={**summary, "winning_trial": trial_id, "winning_trial_run": run_id(exp_dir.name, trial_id)})
    if run is None:
        return
    for h in history:
        safely("log", run.log, scalars(h), step=h["epoch"])
    frames = [[int(f), float(p)] for f, p in (line.split(",") for line in
                                             (out / "val_psnr_per_frame.csv").read_text().splitlines()[1:])]
    table = wandb.Table(columns=["frame", "psnr"], data=frames)
    media = {"val/psnr_per_frame": safely("plot", wandb.plot.line, table, "frame", "psnr",
                                          title="validation PSNR per frame (dB)")}
    media.update({f"test/{p.stem}": safely("video", wandb.Video, str(p), format="gif")
                  for p in sorted(out.glob("pred_seq*.gif"))})
    safely("log", run.log, {k: v for k, v in media.items() if v is not None})
    artifact = wandb.Artifact(run_id(exp_dir.name, "submission"), type="submission",
                              metadata={k: summary.get(k) for k in ("trial_id", "val_psnr", "score", "epochs")})
    for name in ("submission.csv", "summary.json", "config.yaml"):
        if (out / name).is_file():
            artifact.add_file(str(out / name))
    safely("artifact", run.log_artifact, artifact)
    safely("summary", run.summary.update, {"val_psnr": summary.get("val_psnr"),
                                            "score": (summary.get("score") or {}).get("submission")})
    safely("finish", run.finish)


def image(path, caption, tries=5):
    """A wandb.Image of a picture file, read whole first (Ray re-copies a trial's records into storage with each
    checkpoint, so a file may be mid-copy: read again shortly); None where it is not there."""
    import time
    import numpy as np
    import wandb
    from PIL import Image
    for attempt in range(tries):
        if not Path(path).is_file():
            return None
        try:
            with Image.open(path) as picture:
                return wandb.Image(np.asarray(picture.convert("RGB")), caption=caption)
        except (OSError, SyntaxError, ValueError):
            if attempt == tries - 1:
                raise
            time.sleep(0.2)
