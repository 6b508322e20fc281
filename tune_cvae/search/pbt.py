"""Population Based Training (and PB2) on the epoch, synchronous: Ray's schedulers with each perturbation kept
within its parameter's range and a barrier that cannot stall after a resume; the population drawn from the space.
"""
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.schedulers.pb2 import PB2
from ray.tune.search import BasicVariantGenerator

from tune_cvae.common import UserError


def domain(p):
    """A parameter as a Ray Tune search domain (what PBT draws the population from and resamples)."""
    if p["type"] == "categorical":
        return tune.choice(p["choices"])
    if p["type"] == "int":
        return (tune.lograndint if p.get("log") else tune.randint)(p["low"], p["high"] + 1)
    return (tune.loguniform if p.get("log") else tune.uniform)(p["low"], p["high"])


def space_domains(space):
    """A PBT search's param_space: the fixed values and num_epoch, each parameter as a domain."""
    return {**space.fixed, "num_epoch": space.max_epochs, **{k: domain(p) for k, p in space.params.items()}}


def population(space, seed):
    """The population: the space's points_to_evaluate, then random draws (seeded)."""
    return BasicVariantGenerator(points_to_evaluate=list(space.points_to_evaluate) or None, random_state=seed)


class KeepInRange:
    """PBT's explore step, then each mutated value put back within its parameter's range (PBT multiplies by 0.8
    or 1.2 without bounds). A class, so that Ray can pickle the scheduler with the experiment."""

    def __init__(self, params):
        self.bounds = {name: (p["low"], p["high"]) for name, p in params.items()}

    def __call__(self, config):
        for name, (low, high) in self.bounds.items():
            config[name] = min(max(config[name], low), high)
        return config


class UnstallingSync:
    """Synchronous PBT lets a waiting trial run only while it is behind the next perturbation point. After
    --resume (Ray saves no scheduler's state: PBT starts again from nothing, its next point at the first interval)
    or a trial that ended without a result, every waiting trial can be past that point, and nothing would run
    again. When nothing runs, the point moves to one interval after the trial furthest behind, as it would have
    moved had the search not stopped."""

    def choose_trial_to_run(self, tune_controller):
        chosen = super().choose_trial_to_run(tune_controller)
        trials = tune_controller.get_trials()
        if chosen is None and not any(t.status == Trial.RUNNING for t in trials):
            waiting = [self._trial_state[t].last_train_time for t in trials if t.status in (Trial.PENDING,
                                                                                            Trial.PAUSED)]
            if waiting:
                self._next_perturbation_sync = min(waiting) + self._perturbation_interval
                chosen = super().choose_trial_to_run(tune_controller)
        return chosen


class SyncPBT(UnstallingSync, PopulationBasedTraining):
    pass


class SyncPB2(UnstallingSync, PB2):
    pass


def make_pbt(space):
    """Synchronous PBT (or PB2) on the epoch: every `interval` epochs, once the whole population has reached
    it, the bottom quantile takes the checkpoints of the top one and perturbs the `mutate` values."""
    mutated = {name: space.params[name] for name in space.mutated}
    common = dict(time_attr="epoch", metric=space.metric, mode=space.mode, synch=True,
                  perturbation_interval=space.pbt["interval"], quantile_fraction=space.pbt["quantile"],
                  custom_explore_fn=KeepInRange(mutated), log_config=False)
    if space.scheduler == "pb2":
        try:
            return SyncPB2(hyperparam_bounds={k: [p["low"], p["high"]] for k, p in mutated.items()}, **common)
        except RuntimeError as e:  # PB2's Gaussian process needs scikit-learn
            raise UserError(f"scheduler pb2: {e} (pip install scikit-learn), or use scheduler pbt") from None
    return SyncPBT(hyperparam_mutations={k: domain(p) for k, p in mutated.items()},
                                   resample_probability=space.pbt["resample_probability"], **common)
