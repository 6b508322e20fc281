"""`python -m tune_cvae COMMAND ...`: see tune_cvae/cli.py."""
from tune_cvae.cli import main

main()
