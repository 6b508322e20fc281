"""Running a search: the only place Ray is imported.

    tuner        a search start to end: the experiment, the shared dataset, the Tuner, the endings (`run`)
    session      the Ray session and the trials' resources
    trainable    the function trainable around lab.train: restore, train, report every epoch with a checkpoint
    searcher     Optuna's sampler through ask/tell (study: the experiment's Optuna study, the warm start)
    budget       the trial-epoch budget: the ledger and the stopper as one object
    pbt          Population Based Training and PB2, synchronous on the epoch
    callbacks    the console's status table and the storage guard

run_search.py calls tuner.run; importing this package loads nothing else (Ray loads with tuner).
"""
