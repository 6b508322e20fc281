"""Measurements, not product: the speed of the training path against the course's reference loop (speed), the
demo's quality on unseen data (quality), and the search strategies raced at equal budget (race). Each module's
`main(args)` is a `python -m tune_cvae bench ...` command.
"""
