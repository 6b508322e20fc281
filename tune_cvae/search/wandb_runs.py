"""One W&B run per trial, written from the driver as Ray hands it each result (experiment/wandb_log.py): every
epoch's metrics (TensorBoard's keys) and validation image strip (read from the trial's records in storage, so a
trial on any node shows it), under PBT the lineage and the values in force, and the trial's ending in its
summary. A resumed trial continues its run (a stable id); the search's own run holds the trial table and the
report's figures.
"""
from ray.tune import Callback

from tune_cvae.common import UserError
from tune_cvae.experiment import wandb_log
from tune_cvae.experiment.files import EPOCHS_FILE, ERRORED, INTERRUPTED, trial_dirname, trial_results, trial_status
from tune_cvae.experiment.space import label
from tune_cvae.lab.config import make_config


class WandbRuns(Callback):
    """The trials' W&B runs (`settings`: the space's wandb); its runs are left out when Ray pickles it."""

    def __init__(self, settings, where, exp_dir, space):
        self.settings, self.where, self.exp_dir, self.space, self.runs = settings, where, exp_dir, space, {}

    def __getstate__(self):
        return {**self.__dict__, "runs": {}}

    def run_of(self, trial):
        if trial.trial_id not in self.runs:
            searched = [p for p in self.space.params if p in trial.config]
            self.runs[trial.trial_id] = wandb_log.open_run(
                self.settings, self.exp_dir, wandb_log.run_id(self.exp_dir.name, trial.trial_id),
                name=label(f"trial {trial.trial_id}:", {k: trial.config[k] for k in searched}),
                group=self.settings.get("group") or self.exp_dir.name, job_type="trial",
                config={**full_config(trial.config), "searched": searched, "trial_id": trial.trial_id})
            if self.runs[trial.trial_id] is not None and trial.last_result.get("epoch"):
                self.log_again(self.runs[trial.trial_id], trial, int(trial.last_result["epoch"]))
        return self.runs[trial.trial_id]

    def log_again(self, run, trial, epoch):
        """A resumed trial's recorded epochs up to `epoch`, logged again into its run: a driver killed with SIGKILL
        loses what W&B still buffered. Steps W&B already holds lie below the resumed run's latest, which W&B's
        rule of increasing steps drops (not tried against a server)."""
        for result in trial_results(self.record(trial, EPOCHS_FILE).parent):
            if 0 < int(result["epoch"]) <= epoch:
                wandb_log.safely("log", run.log, wandb_log.scalars(result), step=int(result["epoch"]))

    def record(self, trial, name):
        """The local path of one of a trial's records in storage (a URI's: downloaded first)."""
        path = self.where.folder(self.exp_dir.name) / trial_dirname(trial.trial_id) / name
        if self.where.remote:
            wandb_log.safely("records", self.where.download, f"{self.where.path}/{self.exp_dir.name}/"
                             f"{trial_dirname(trial.trial_id)}/{name}", path)
        return path

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_of(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run = self.run_of(trial)
        if run is None or "epoch" not in result:
            return
        data = wandb_log.scalars(result)
        data["teacher_forcing"] = int(bool(result.get("teacher_forcing")))
        for key in self.space.mutated:  # under PBT: the values in force this epoch, and whose weights
            data[f"pbt/{key}"] = result.get("config", trial.config).get(key)
        if self.space.mutated and result.get("lineage"):
            data["pbt/lineage"] = result["lineage"]
        strip = self.strip(trial, result["epoch"])
        if strip is not None:
            data["val/frames"] = strip
        wandb_log.safely("log", run.log, data, step=int(result["epoch"]))

    def strip(self, trial, epoch):
        """The trial's last validation strip from its records in storage."""
        return wandb_log.safely("image", wandb_log.image, self.record(trial, wandb_log.STRIP_FILE),
                                f"epoch {epoch}: predicted (top), true (bottom)")

    def end(self, trial, ending):
        run = self.runs.pop(trial.trial_id, None)
        if run is not None:
            wandb_log.safely("summary", run.summary.update, {"ending": ending, "epochs": trial.last_result.get(
                "epoch", 0) if trial.last_result else 0})
            wandb_log.safely("finish", run.finish)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.end(trial, trial_status(trial.last_result, trial.config.get("num_epoch", self.space.max_epochs),
                                     self.space.metric))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.end(trial, ERRORED)

    def on_experiment_end(self, trials, **info):
        for trial in trials:
            if trial.trial_id in self.runs:
                self.end(trial, INTERRUPTED)


def full_config(config):
    """Every option of a trial's run (the defaults it did not set included)."""
    try:
        return make_config(config)
    except UserError:
        return dict(config)


def summary_run(settings, exp_dir, table, report_dir):
    """The search's own run in the trials' group: the trial table and the report's figures."""
    import wandb
    run = wandb_log.open_run(settings, exp_dir, wandb_log.run_id(exp_dir.name, "search"), name=f"search {exp_dir.name}",
                             group=settings.get("group") or exp_dir.name, job_type="search")
    if run is None:
        return
    data = {"trials": wandb_log.safely("table", wandb.Table, dataframe=table.astype(str))}
    data.update({f"report/{p.stem}": wandb_log.image(p, p.stem) for p in sorted(report_dir.glob("*.png"))})
    wandb_log.safely("log", run.log, {k: v for k, v in data.items() if v is not None})
    wandb_log.safely("finish", run.finish)
