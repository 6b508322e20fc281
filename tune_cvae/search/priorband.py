"""Prior-guided sampling (`searcher: prior`), after PriorBand (Mallik et al., NeurIPS 2023): each new trial draws
its values from the user's prior (experiment/prior.py), from a mutation of the incumbent, or uniformly, with
weights that follow the evidence. An Optuna sampler, so that every trial still enters the study (the journal,
optuna-dashboard, PRUNED stops, learning curves) through the same ask/tell searcher, under Ray's ASHA.

PriorBand's ensemble sampling policy, on ASHA's rungs (grace_period x reduction_factor^i, up to max_epochs):
- a uniform share w_u = 1 / (1 + eta^r) for a trial that starts at rung r: ASHA starts every trial at the lowest
  rung, so w_u = 1/2, as PriorBand samples its lowest-fidelity bracket;
- the rest, 1 - w_u, goes to the prior until the evidence can speak: a trial has reached max_epochs, the trials
  have spent one successive-halving bracket's worth of epochs, and a rung holds eta values;
- then it is split between the prior and the incumbent (the best value reported at any rung) in proportion to
  how likely the top 1/eta of the highest such rung are under each (the prior, and a belief centred on the
  incumbent), weighted by rank: a prior that the best trials contradict loses its weight.
An incumbent sample keeps each value with probability 1/2 and redraws it otherwise (numbers: a normal of
std 0.25 around it in the unit range; categoricals: another choice).

`searcher: sample-prior` draws every trial from the prior alone: the prior's control in the race.

Warm-started trials count as evidence; start points and the portfolio are enqueued trials that no source drew.
Each trial's source is the user attribute `source` in the study (`source_of`); the report's table shows it.
"""
import numpy as np
from optuna.samplers import BaseSampler

from tune_cvae.experiment.prior import Belief, around, components, density, from_unit, truncnorm_sample, unit

MUTATION_RATE, MUTATION_STD = 0.5, 0.25  # PriorBand's incumbent sampling: how many values change, how far
UNIFORM = 0.5  # PriorBand's uniform share 1 / (1 + eta^r) for a trial that starts at rung r = 0, as ASHA's do


def rungs(space):
    """ASHA's rungs of a space: grace_period x reduction_factor^i below max_epochs, then max_epochs."""
    out, rung = [], space.grace_period
    while rung < space.max_epochs:
        out.append(rung)
        rung *= space.reduction_factor
    return out + [space.max_epochs]


def bracket_cost(ladder, eta):
    """Trial-epochs of one successive-halving bracket over the rungs: eta^k trials at the lowest, each rung keeping
    1/eta of the one below, each trial paying the epochs from the rung below to its own."""
    top = len(ladder) - 1
    return sum(eta ** (top - i) * (r - (ladder[i - 1] if i else 0)) for i, r in enumerate(ladder))


class PriorBandSampler(BaseSampler):
    """The sampler of `searcher: prior` (`only_prior`: of `searcher: sample-prior`)."""

    def __init__(self, space, seed, only_prior=False):
        self.space, self.only_prior = space, only_prior
        self.rng = np.random.default_rng(seed)
        self.prior = components(space)
        self.ladder, self.eta = rungs(space), space.reduction_factor
        self.plans = {}  # trial number -> (source, {parameter: Belief} it draws from, incumbent values or None)

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def before_trial(self, study, trial):
        if "fixed_params" not in trial.system_attrs:  # an enqueued start point or portfolio entry draws nothing
            self.plans[trial.number] = self.plan(study)

    def source_of(self, number):
        """Which source drew the values of trial `number` (None: an enqueued trial)."""
        return self.plans[number][0] if number in self.plans else None

    def sample_independent(self, study, trial, name, distribution):
        source, beliefs, incumbent = self.plans.get(trial.number, ("uniform", None, None))
        p = self.space.params[name]
        if source == "incumbent" and name in incumbent:
            return incumbent[name] if self.rng.random() >= MUTATION_RATE else self.mutate(p, incumbent[name])
        return (beliefs[name] if beliefs else Belief(p)).sample(self.rng)

    def mutate(self, p, value):
        if p["type"] == "categorical":
            others = [c for c in p["choices"] if c != value] or [value]
            return others[self.rng.integers(len(others))]
        return from_unit(p, truncnorm_sample(self.rng, unit(p, value), MUTATION_STD))

    def plan(self, study):
        """(source, beliefs, incumbent) of the next trial, by the weights the evidence gives now."""
        component = self.prior[self.rng.integers(len(self.prior))]
        if self.only_prior:
            return "prior", component, None
        weights, incumbent = self.weights(study)
        source = self.rng.choice(["prior", "incumbent", "uniform"], p=weights)
        return str(source), (component if source == "prior" else None), incumbent

    def weights(self, study):
        """[w_prior, w_incumbent, w_uniform] and the incumbent's values (None until the evidence can speak)."""
        w_uniform, rows = UNIFORM, self.evaluations(study)
        at = {rung: sum(r == rung for r, _, _ in rows) for rung in self.ladder}
        step = {r: r - (self.ladder[i - 1] if i else 0) for i, r in enumerate(self.ladder)}  # epochs from below
        spent = sum(step[r] for r, _, _ in rows)
        if not (at[self.ladder[-1]] and spent >= bracket_cost(self.ladder, self.eta) and max(at.values()) >= self.eta):
            return [1 - w_uniform, 0.0, w_uniform], None
        sign = 1 if self.space.mode == "max" else -1
        incumbent = max(rows, key=lambda row: sign * row[1])[2]
        top_rung = max(r for r, n in at.items() if n >= self.eta)
        best = sorted((row for row in rows if row[0] == top_rung), key=lambda row: -sign * row[1])
        top = [params for _, _, params in best[:max(1, len(best) // self.eta)]]
        rank = np.arange(len(top), 0, -1)
        score_inc = float((rank * [density([around(self.space, incumbent)], c) for c in top]).sum())
        score_prior = float((rank * [density(self.prior, c) for c in top]).sum())
        share = score_prior / (score_prior + score_inc) if score_prior + score_inc > 0 else 0.5
        return [(1 - w_uniform) * share, (1 - w_uniform) * (1 - share), w_uniform], incumbent

    def evaluations(self, study):
        """[(rung, value, params)]: each trial's value at each rung it reached, finished trials and running."""
        rows = []
        for t in study.get_trials(deepcopy=False):
            for rung in self.ladder:
                value = t.intermediate_values.get(rung)
                if value is not None and np.isfinite(value) and t.params:
                    rows.append((rung, value, t.params))
        return rows
