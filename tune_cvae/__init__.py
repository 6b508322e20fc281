"""tune_cvae: hyperparameter search for the Lab4 conditional-VAE video predictor.

Four layers, each a subpackage, each importing only from those before it:

    common       what every layer shares: UserError, say (the library's one reporting channel), atomic writes
    lab          the course's model and one training run; the leaderboard's rollouts, submission and score
    experiment   an experiment folder as data, read from its files: space, record, tables, report, run_best
    search       running a search with Ray Tune and Optuna (the only place Ray is imported)
    bench        measurements, not product: speed, quality on unseen data, the strategy race

`python -m tune_cvae COMMAND` (cli.py) and the scripts run_search.py and run_best.py sit on top.
"""
