"""The ask/tell searcher: Optuna's sampler proposes through the experiment's study, and the study records what
really happened to each trial.
"""
import math
import pickle

from optuna.trial import TrialState
from ray.tune.search import Searcher

from tune_cvae.common import write_whole
from tune_cvae.experiment.files import DIVERGED, FINISHED, STOPPED, trial_status
from tune_cvae.experiment.space import DefineByRun
from tune_cvae.lab.config import best_of
from tune_cvae.search.study import new_study, source_of


class AskTellSearcher(Searcher):
    """TPE or random sampling through Optuna's ask/tell, so that the study records what really happened: every
    epoch's metric is an intermediate value (step = epoch), a trial ASHA or the budget stopped is PRUNED (TPE
    ranks it by its last step, below finished trials), a finished trial's value is its best epoch's metric (the
    quantity trials.csv and run_best.py rank by), a diverged trial is COMPLETE at the worst value seen so far
    (user attribute `diverged`: as FAIL, TPE would ignore it and keep proposing where trials diverge), an errored
    one FAIL. Each Optuna trial carries its Ray trial id as the user attribute `ray_trial_id`. (Ray's
    OptunaSearch tells an early-stopped trial as COMPLETE.)"""

    def __init__(self, space, study, budget):
        super().__init__(metric=space.metric, mode=space.mode)
        self.space, self.study, self.budget = space, study, budget
        self.trials, self.values = {}, {}  # Ray trial id -> Optuna trial, {epoch: metric}
        self.worst = None  # the worst finite metric value any trial reported

    def suggest(self, trial_id):
        if self.budget.spent():
            return Searcher.FINISHED
        trial = self.study.ask()
        trial.set_user_attr("ray_trial_id", trial_id)
        trial.set_user_attr("source", source_of(self.study, trial))
        constants = DefineByRun(self.space)(trial)
        self.trials[trial_id], self.values[trial_id] = trial, {}
        return {**constants, **trial.params}

    def on_trial_result(self, trial_id, result):
        self.budget.note(trial_id, result)
        value, epoch = result.get(self.metric), int(result.get("epoch", 0))
        if trial_id in self.trials and isinstance(value, (int, float)) and math.isfinite(value) \
                and epoch not in self.values[trial_id]:
            self.trials[trial_id].report(value, step=epoch)
            self.values[trial_id][epoch] = value
            worse = min if self.mode == "max" else max
            self.worst = value if self.worst is None else worse(self.worst, value)

    def on_trial_complete(self, trial_id, result=None, error=False):
        if result:  # Ray hands a trial's last result (the one ASHA stopped it on) only to this method
            self.on_trial_result(trial_id, result)
        trial, values = self.trials.pop(trial_id, None), list(self.values.pop(trial_id, {}).values())
        if trial is None:
            return
        status = trial_status(result, self.space.max_epochs, self.metric, errored=error)
        if status == FINISHED and values:
            self.study.tell(trial, best_of(self.mode)(values))
        elif status == STOPPED and values:
            self.study.tell(trial, state=TrialState.PRUNED)
        elif status == DIVERGED and self.worst is not None:
            trial.set_user_attr("diverged", True)
            self.study.tell(trial, self.worst)
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def save(self, checkpoint_path):
        write_whole(checkpoint_path, pickle.dumps(self.__dict__))  # a full disk leaves the last whole state

    def restore(self, checkpoint_path):
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.budget.epochs.update(state.pop("budget").epochs)  # in place: the stopper shares this budget
        self.__dict__.update(state)
        self.reconcile()

    def finished_in_journal(self, number):
        """Has the study (the journal, replayed) already heard the end of trial `number`?"""
        return self.study.get_trials(deepcopy=False)[number].state.is_finished()

    def reconcile(self):
        """After a restore the journal is the truth, and it can be ahead of this state, saved earlier: a trial told
        after the last save is dropped here (its result may come again when Ray resumes it, and is not told
        twice); a trial asked after it, which Ray's saved state does not hold either, will never run and is told
        FAIL, so that the study holds no trial RUNNING forever."""
        for trial_id, trial in list(self.trials.items()):
            if self.finished_in_journal(trial.number):
                self.trials.pop(trial_id)
                self.values.pop(trial_id, None)
        known = {trial.number for trial in self.trials.values()}
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in known:
                self.study.tell(frozen.number, state=TrialState.FAIL)


def make_searcher(space, exp_dir, seed, budget, warm_start=None):
    """The ask/tell searcher over the experiment's Optuna study (study.new_study), spending `budget`."""
    return AskTellSearcher(space, new_study(space, exp_dir, seed, warm_start), budget)
