"""An experiment folder's files: their names, a trial's status, a trial's results, the Optuna study and the trials
an interruption cut off. The search writes them and everything after reads them through this module:

    EXPERIMENT/
      search.yaml             the space, the dataset folder, the seed, the trials' resources (record.py)
      optuna.journal          the Optuna study (optuna-dashboard reads it)
      interrupted.json        the trials the last interruption cut off
      trials.csv|md|html      the trial table (tables.py); report/ (report.py); best/ (run_best.py)
      trial_<id>/             params.json and result.json (Ray's), epochs.jsonl, val_psnr_per_frame.csv,
                              checkpoint_*/state.pt, error.txt, one TensorBoard run
      forgotten/trial_<id>/   trials a killed driver started after Ray last saved its state (Ray ran them anew)
"""
import json
import math
import shutil
from pathlib import Path

from tune_cvae.common import write_whole

SEARCH_FILE = "search.yaml"
JOURNAL = "optuna.journal"
INTERRUPTED_FILE = "interrupted.json"
EPOCHS_FILE = "epochs.jsonl"  # every epoch's result, appended by the trainable (Ray may rewrite result.json)
# an epoch's numbers that TensorBoard and W&B plot
EPOCH_SCALARS = ("loss", "mse", "kl", "beta", "tfr", "lr", "val_psnr", "val_psnr_600", "train_frames_per_s")
PER_FRAME_FILE = "val_psnr_per_frame.csv"  # a trial's last validation (and run_best's) PSNR per frame
STATE_FILE = "state.pt"  # a checkpoint folder's run state
PARAMS_FILE, RESULT_FILE, ERROR_FILE = "params.json", "result.json", "error.txt"  # Ray's, in a trial folder
REPORT_DIR, BEST_DIR, FORGOTTEN_DIR = "report", "best", "forgotten"

FINISHED, STOPPED, DIVERGED, ERRORED, INTERRUPTED = "finished", "stopped early", "diverged (NaN)", "errored", \
    "interrupted"
USABLE = (FINISHED, STOPPED, INTERRUPTED)  # statuses of trials whose metric values count
RUNNING = "running"  # a trial the console's status table has seen start and not end


def trial_dirname(trial_id):
    """A trial's folder: its id only (Ray's default packs every parameter into the name); "*" globs them all."""
    return f"trial_{trial_id}"


def trial_id_of(trial_dir):
    """The trial id a trial folder is named after."""
    return Path(trial_dir).name.removeprefix(trial_dirname(""))


def is_nan(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def trial_status(last, num_epoch, metric, errored=False, cut=False):
    """A trial's status from its last result (None: it reported none): the one decision behind the table, the
    console's status table and what the Optuna study is told."""
    last = last or {}
    if errored:
        return ERRORED
    if last and (last.get("diverged") or is_nan(last.get(metric))):
        return DIVERGED
    if int(last.get("epoch", 0)) >= num_epoch:
        return FINISHED
    return INTERRUPTED if cut else STOPPED


def trial_results(trial_dir):
    """The results a trial reported, one dict per epoch in epoch order: the trainable's own epochs.jsonl, with
    what Ray added to each (time_total_s, trial_id, config) from its result.json. Ray rewrites result.json when a
    paused trial restarts (every PBT perturbation), losing earlier epochs; epochs.jsonl is only appended to. A
    resumed trial trains again the epochs after its last saved checkpoint: the later report counts."""
    by_epoch = {}
    for name in (EPOCHS_FILE, RESULT_FILE):
        path = Path(trial_dir) / name
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    result = json.loads(line)
                    epoch = result.get("epoch", len(by_epoch) + 1)
                    by_epoch[epoch] = {**by_epoch.get(epoch, {}), **result}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def study_storage(exp_dir):
    """The Optuna storage of a search's study: EXPERIMENT/optuna.journal."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(Path(exp_dir) / JOURNAL)))


def write_interrupted(exp_dir, trial_ids):
    """Record the trials an interruption cut off (the table shows them `interrupted`, not `stopped early`)."""
    write_whole(Path(exp_dir) / INTERRUPTED_FILE, json.dumps(list(trial_ids)) + "\n")


def interrupted_trials(exp_dir):
    """Trial ids the last interruption of the search cut off; [] when the search was not interrupted."""
    path = Path(exp_dir) / INTERRUPTED_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError):
        return []


def set_aside_forgotten(exp_dir, known):
    """Move trial folders whose names are not in `known` (the trials Ray's restored state holds) into forgotten/:
    a driver killed with SIGKILL leaves trials it started after its last save, which Ray has since run anew, and
    the table would count them twice."""
    for params in sorted(Path(exp_dir).glob(f"{trial_dirname('*')}/{PARAMS_FILE}")):
        if params.parent.name not in known:
            (Path(exp_dir) / FORGOTTEN_DIR).mkdir(exist_ok=True)
            shutil.move(str(params.parent), str(Path(exp_dir) / FORGOTTEN_DIR / params.parent.name))
