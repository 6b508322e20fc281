"""A search space: what a trial may vary (params, with `when` conditions), what all trials share (fixed), how the
search proposes, stops and exploits trials (searcher, scheduler, pbt), and the Optuna define-by-run function
over it. A space comes from a YAML file (space_yaml.py checks it completely):

    metric: val_psnr            # what the trainable reports: val_psnr, val_psnr_600 (max) or loss, mse (min)
    mode: max
    num_samples: 24
    max_epochs: 70              # each trial's num_epoch and ASHA's max_t
    grace_period: 5             # ASHA: epochs before a trial can be stopped
    reduction_factor: 3
    searcher: tpe               # tpe (Optuna's TPE), random, prior (PriorBand) or sample-prior (the prior alone)
    scheduler: asha             # asha (early stopping), none (every trial trains max_epochs), pbt or pb2 (below)
    budget: 200                 # optional: stop once the trials have trained this many epochs in all
    fixed: {F_dim: 128}         # config values every trial shares
    params:
      kl_anneal_type: {type: categorical, choices: [Cyclical, Monotonic, None]}
      kl_anneal_cycle: {type: int, low: 2, high: 20, when: {kl_anneal_type: Cyclical}}
      lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    points_to_evaluate:         # evaluated first, in order
      - {kl_anneal_type: Cyclical, kl_anneal_cycle: 10, lr: 1.0e-3}

A parameter with `when` is suggested only when every named (earlier) parameter has the given value (or one of
a list of values); otherwise it is absent from the trial's config and the run uses the default.

Population Based Training (`scheduler: pbt`, or `pb2` for its Gaussian-process explorer): num_samples trials
train side by side; every `interval` epochs the bottom `quantile` takes the weights of a trial of the top one and
its values, with the `mutate` parameters perturbed (x0.8 or x1.2 within their range, or redrawn with
`resample_probability`). There the KL weight, the teacher-forcing ratio and the lr are values a trial holds
(kl_anneal_type None, no teacher-forcing decay, no LR schedule), so what PBT changes is the schedule:

    scheduler: pbt
    pbt: {interval: 2, quantile: 0.25, resample_probability: 0.25, mutate: [kl_beta_max, tfr, lr]}

The population is drawn at random (Ray's PBT takes no searcher: searcher random), without `when` conditions.
"""
from dataclasses import asdict, dataclass, field

from tune_cvae.common import UserError

SEARCHERS, SCHEDULERS, PBT = ("tpe", "random", "prior", "sample-prior"), ("asha", "none", "pbt", "pb2"), ("pbt", "pb2")
PBT_FIXED = {"kl_anneal_type": "None", "tfr_d_step": 0.0, "lr_scheduler": "none"}  # hold what PBT changes constant
PBT_SCHEDULE_KEYS = {"kl_anneal_cycle", "kl_anneal_ratio", "tfr_sde", "milestones", "gamma", *PBT_FIXED}


class SpaceError(UserError):
    pass


def short(value):
    """A searched value as a trial's label and the report show it: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


LABEL_BYTES = 140  # within every common file system's limit on one name (255 bytes; 143 under eCryptfs)


def label(head, values, limit=LABEL_BYTES):
    """`head` and as many of the `values` (name -> value) as fit in `limit` bytes of UTF-8, in order, with " ..."
    where some were left out: a trial's name as a folder (TensorBoard's run) and as a Ray actor, whatever the
    space. The full values stay in the trial's params.json, the HParams entry and trials.csv."""
    text = head.encode()[:limit - 4].decode(errors="ignore")
    parts = [f"{k}={short(v)}".replace("/", "_").replace("\0", "") for k, v in values.items()]
    for i, part in enumerate(parts):
        room = limit - (0 if i == len(parts) - 1 else 4)  # a later cut still needs room for " ..."
        if len(f"{text} {part}".encode()) > room:
            return text + " ..."
        text = f"{text} {part}"
    return text


@dataclass
class Space:
    path: str
    metric: str
    mode: str
    num_samples: int
    max_epochs: int
    grace_period: int
    reduction_factor: int
    fixed: dict
    params: dict
    points_to_evaluate: list = field(default_factory=list)
    retrain: dict = field(default_factory=dict)  # run_best.py's defaults for this space: {epochs: N, set: {...}}
    searcher: str = "tpe"
    scheduler: str = "asha"
    budget: int = None  # trial-epochs after which the search ends (None: num_samples trials decide)
    pbt: dict = None  # PBT's settings (interval, quantile, resample_probability, mutate); used by pbt and pb2
    portfolio: list = field(default_factory=list)  # configurations from earlier searches, after the start points
    portfolio_file: str = None  # the file they came from
    wandb: dict = None  # W&B runs of the trials: {project, entity, group, tags} (run_search.py --wandb PROJECT)

    @property
    def mutated(self):
        """The parameters PBT changes while trials train (none under another scheduler)."""
        return list(self.pbt["mutate"]) if self.scheduler in PBT else []

    def active(self, name, values):
        """Is parameter `name` suggested, given the values chosen so far?"""
        for other, allowed in self.params[name].get("when", {}).items():
            allowed = allowed if isinstance(allowed, list) else [allowed]
            if values.get(other) not in allowed:
                return False
        return True

    def trial_config(self, suggested):
        """The run config of a trial: fixed values, the suggestions, num_epoch = max_epochs."""
        return {**self.fixed, **suggested, "num_epoch": self.max_epochs}

    def to_dict(self):
        """The space as YAML can hold it (parse() of this dict gives the same Space back)."""
        return {k: v for k, v in asdict(self).items() if k != "path"}


class DefineByRun:
    """Optuna define-by-run function over a Space (a class, not a closure, so Ray can pickle the searcher)."""

    def __init__(self, space):
        self.space = space

    def __call__(self, trial):
        values = {}
        for name, p in self.space.params.items():
            if not self.space.active(name, values):
                continue
            if p["type"] == "float":
                values[name] = trial.suggest_float(name, p["low"], p["high"], log=p.get("log", False))
            elif p["type"] == "int":
                values[name] = trial.suggest_int(name, p["low"], p["high"], log=p.get("log", False))
            else:
                values[name] = trial.suggest_categorical(name, p["choices"])
        return {**self.space.fixed, "num_epoch": self.space.max_epochs}  # constants merged into every config
