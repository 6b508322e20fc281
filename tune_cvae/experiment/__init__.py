"""An experiment folder as data, read from its files, Ray-free: what a search writes and everything after reads.

    files        the folder's file names, a trial's status and results, the Optuna study, the interrupted trials
    space        a search space and its define-by-run function; space_yaml: a YAML space read and checked
    record       search.yaml: the space, the dataset, the seed, the trials' resources
    start        a search's start: its folder, the flags applied, the warm start, the duration warning
    ending       a search's end: the table, Interrupted and the command that continues it, errored trials
    lineage      a PBT trial's lineage and the schedule its weights trained with
    tables       the trial table (trials.csv/.md/.html); report and figures: report/ with the lab's figures
    winner       the best trial, its checkpoint; best: run_best's pipeline; staging: its output folder

The names below load their module on first use, so importing the package stays light.
"""
import importlib

_HOMES = {"Space": "space", "SpaceError": "space", "load_space": "space_yaml", "parse": "space_yaml",
          "Search": "record", "read_search": "record", "write_search": "record", "collect": "tables",
          "write": "report", "run_best": "best", "new_experiment": "start",
          "Interrupted": "ending"}
__all__ = sorted(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
