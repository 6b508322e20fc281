"""Search KL-annealing and teacher-forcing settings (and whatever else a space names) with Ray Tune,
Optuna's TPE (or random search) and ASHA (or no early stopping).

    python run_search.py --space kl_tfr.yaml --gpus 4
"""
import argparse
import sys

from tune_cvae.cli import HelpFormatter, fail
from tune_cvae.common import UserError
from tune_cvae.experiment.space import SCHEDULERS, SEARCHERS


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--space", default="kl_tfr.yaml",
                   help="search space: a file name in search_spaces/ (kl_tfr.yaml, demo.yaml, smoke.yaml) or a path")
    p.add_argument("--data", dest="data_dir", metavar="DIR", default=None,
                   help="LAB4-layout dataset folder (default: the built-in synthetic data)")
    p.add_argument("--gpus", type=float, default=0, help="total GPUs the search may use (0 = train on CPUs)")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs each trial holds; fractions pack trials on a GPU (0.25 = 4 per GPU). "
                        "Default: 1 when --gpus > 0")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs each trial holds (its torch threads)")
    p.add_argument("--cpus", dest="num_cpus", metavar="N", type=int, default=None,
                   help="CPUs a local Ray session may use (default: all); ignored with --address")
    p.add_argument("--samples", type=int, default=None, help="number of trials, the population under PBT "
                   "(default: the space's num_samples)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="epochs of a full trial, ASHA's max_t (default: the space's max_epochs)")
    p.add_argument("--searcher", choices=SEARCHERS, default=None,
                   help="how trials are proposed: Optuna's TPE, random sampling, prior (PriorBand's mix of uniform "
                        "draws, the space's prior and the best trial's neighbourhood, weighted by which does well) "
                        "or sample-prior (draws from the prior alone) (default: the space's searcher, else tpe)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None,
                   help="asha stops poor trials early; none trains every trial to max_epochs; pbt / pb2: Population "
                        "Based Training changes kl_beta_max, tfr and lr while the trials train (needs a PBT space "
                        "such as kl_tfr_pbt.yaml) (default: the space's scheduler, else asha)")
    p.add_argument("--budget", type=int, default=None, metavar="EPOCHS",
                   help="end the search once its trials have trained this many epochs in all (trial-epochs), "
                        "--samples then only caps the number of trials (default: the space's budget, else none)")
    p.add_argument("--warm-start", default=None, metavar="EXPERIMENT",
                   help="begin the study with the finished and stopped trials of an earlier experiment (a folder or "
                        "a URI STORAGE/NAME) whose values lie in this space, so the search starts where it ended")
    p.add_argument("--wandb", default=None, metavar="PROJECT",
                   help="also log each trial as a run of this Weights & Biases project, grouped by experiment "
                        "(needs `make wandb`; WANDB_MODE=offline logs into files for `wandb sync`; default: the "
                        "space's wandb: settings, else no W&B)")
    p.add_argument("--name", default=None, help="experiment name (default: SPACE-DATE-TIME)")
    p.add_argument("--storage", default="ray_results",
                   help="where experiments live: a folder (on a cluster, one every node mounts at the same path) or "
                        "a URI every node reaches, e.g. s3://BUCKET/PATH?region=R (S3-compatible servers: "
                        "&endpoint_override=http://HOST:PORT); credentials from the environment (AWS_ACCESS_KEY_ID, "
                        "AWS_SECRET_ACCESS_KEY)")
    p.add_argument("--address", default=None,
                   help="join an existing Ray cluster (e.g. auto or HOST:6379); RAY_ADDRESS is honoured too. "
                        "Without either, a local session of its own, even where `ray start` ran here")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment --name")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (TPE or random)")
    p.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                   help="serve Ray's dashboard of a local session on http://127.0.0.1:8265")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    for flag in ("samples", "max_epochs", "budget"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            fail(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be at least 1")
    if args.gpus < 0:
        fail(f"--gpus {args.gpus:g}: must be >= 0")
    from tune_cvae.search import tuner  # after parsing: --help stays fast and Ray-free
    try:
        tuner.run(args.space, **{k: v for k, v in vars(args).items() if k != "space"})
    except UserError as e:
        fail(e)
    except tuner.Interrupted as e:
        print(e, file=sys.stderr)
        raise SystemExit(e.exit_status)  # 130 after Ctrl-C, 143 after SIGTERM


if __name__ == "__main__":
    main()
