"""The one table of run options (defaults = the template's values) and make_config, which checks a run's config.

Every run (the train CLI, a search trial, run_best's retraining) goes through make_config, so a config dict
describes a run completely and a mistyped key or value is refused with its name.
"""
import math

from tune_cvae.common import UserError

# key: (default = the template's value, allowed values or type, help)
OPTIONS = {
    "num_epoch": (70, int, "epochs to train (also the length the KL schedule is laid out over)"),
    "batch_size": (2, int, "clips per optimiser step"),
    "lr": (1e-3, float, "learning rate"),
    "optim": ("Adam", ["Adam", "AdamW"], "optimiser"),
    "weight_decay": (0.0, float, "weight decay (AdamW's decoupled form with AdamW)"),
    "lr_scheduler": ("multistep", ["multistep", "multistep_scaled", "cosine", "none"],
                     "LR schedule, stepped per epoch; multistep_scaled multiplies by gamma at 1/2 and 3/4 of "
                     "num_epoch"),
    "milestones": ([2, 5], list, "epochs at which multistep multiplies the LR by gamma"),
    "gamma": (0.1, float, "multistep's factor"),
    "grad_clip": (1.0, float, "max gradient norm (0 = no clipping)"),
    "optim_step": ("clip", ["clip", "frame"], "an optimiser step per batch of clips, or after every predicted frame"),
    "kl_anneal_type": ("Cyclical", ["Cyclical", "Monotonic", "None"], "KL annealing schedule"),
    "kl_anneal_cycle": (10, int, "number of Cyclical ramps over num_epoch"),
    "kl_anneal_ratio": (1.0, float, "fraction of each cycle spent ramping up"),
    "kl_beta_max": (1.0, float, "ceiling of beta (the schedule's `stop`)"),
    "kl_reduction": ("sum_batch", ["sum_batch", "mean"], "KL as the template (sum / batch) or per-element mean"),
    "tfr": (1.0, float, "initial teacher-forcing ratio"),
    "tfr_sde": (10, int, "epoch from which the teacher-forcing ratio decays"),
    "tfr_d_step": (0.1, float, "decay of the teacher-forcing ratio per epoch"),
    "train_vi_len": (16, int, "frames per training clip"),
    "partial": (1.0, float, "fraction of the training list used"),
    "fast_train": (False, bool, "use fast_partial of the data for the first fast_train_epoch epochs"),
    "fast_partial": (0.4, float, "data fraction while fast training"),
    "fast_train_epoch": (5, int, "epochs of fast training"),
    "F_dim": (128, int, "frame feature channels"),
    "L_dim": (32, int, "pose feature channels"),
    "N_dim": (12, int, "latent channels"),
    "D_out_dim": (192, int, "Decoder_Fusion output channels"),
    "output_activation": ("sigmoid", ["sigmoid", "clamp", "none"], "what maps the Generator's output to [0, 1]"),
    "output": ("frame", ["frame", "residual"], "the Generator predicts the frame, or its change from the previous one"),
    "logvar_clamp": (0.0, float, "clamp the posterior's log-variance to [-v, v] (0 = no clamp)"),
    "infer_z": ("prior", ["prior", "zero"], "z during validation rollouts: drawn from N(0, I), or its mean 0"),
    "val_frames": (0, int, "frames of the validation video rolled out after each epoch (0: all of it); fewer "
                           "validate faster, and less like the leaderboard's 600"),
    "shuffle": (True, bool, "shuffle the clips each epoch"),
    "precision": ("fp32", ["fp32", "bf16"], "float32, or bfloat16 autocast of the forward passes (weights stay "
                                            "float32)"),
    "compile": (False, bool, "torch.compile the training step and the rollout's frame step (CUDA graphs on CUDA); "
                             "a few minutes of compiling per run, no gain on CPU (docs/PERFORMANCE.md)"),
    "seed": (1, int, "random seed (same config + seed = same metrics on the same machine)"),
}
DEFAULTS = {k: v[0] for k, v in OPTIONS.items()}
METRICS = {"val_psnr": "max", "val_psnr_600": "max", "loss": "min", "mse": "min"}  # a run's rankable metrics
BUILTIN_TRAIN_FRAMES, BUILTIN_SEED = 2400, 0  # the built-in dataset's size and seed (synthetic.py)
UNSEEN_SEED = 7  # the built-in dataset's seed for judging quality: data the spaces and the race were not tuned on
SETTABLE = ("kl_beta_max", "tfr", "lr")  # what a run can be given between epochs (train.hold; PBT changes these)
POSITIVE = {"num_epoch", "batch_size", "lr", "F_dim", "L_dim", "N_dim", "D_out_dim", "kl_anneal_cycle",
            "kl_anneal_ratio", "partial", "fast_partial"}
FRACTIONS = {"partial", "fast_partial", "kl_anneal_ratio"}
MODEL_SIZES = ("F_dim", "L_dim", "N_dim", "D_out_dim")  # one rule spans them; every other rule checks one key


def best_of(mode):
    """max or min: the better of a metric's values under `mode`."""
    return max if mode == "max" else min


class ConfigError(UserError):
    pass


def make_config(overrides=None):
    """DEFAULTS updated with `overrides`, checked: every run (CLI, trial, retraining) goes through here."""
    config = dict(DEFAULTS)
    for key, value in (overrides or {}).items():
        if key not in OPTIONS:
            raise ConfigError(f"unknown config key {key!r} (known: {', '.join(OPTIONS)})")
        config[key] = value
    for key, (_, kind, _) in OPTIONS.items():
        config[key] = _check(key, config[key], kind)
    dims = config["F_dim"] + config["L_dim"] + config["N_dim"]
    if config["F_dim"] % 8 or config["L_dim"] % 2 or config["D_out_dim"] % 8 or dims % 4:
        raise ConfigError("F_dim and D_out_dim must be multiples of 8, L_dim even, F_dim+L_dim+N_dim a multiple of 4")
    if config["val_frames"] == 1:
        raise ConfigError("val_frames=1: the rollout needs 2 frames at least (0: the whole video)")
    if config["train_vi_len"] < 2:
        raise ConfigError(f"train_vi_len={config['train_vi_len']}: must be >= 2")
    return config


def _check(key, value, kind):
    if isinstance(kind, list):
        if value not in kind:
            raise ConfigError(f"{key}={value!r}: must be one of {kind}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is list and not (isinstance(value, list) and all(isinstance(v, int) for v in value)):
        raise ConfigError(f"{key}={value!r}: must be a list of integers")
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r}: must be {kind.__name__}")
    if kind in (int, float) and not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{key}={value!r}: must be a finite number >= 0")
    if key in POSITIVE and value <= 0:
        raise ConfigError(f"{key}={value!r}: must be > 0")
    if key in FRACTIONS and value > 1:
        raise ConfigError(f"{key}={value!r}: must be in (0, 1]")
    return value
