"""tune_cvae: hyperparameter search for the Lab4 conditional-VAE video predictor."""
import argparse
import sys


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends a flag's default to its help unless the help already names it, or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


class UserError(Exception):
    """A mistake in what the user gave us (data, flags, a space): shown as one line, exit status 2."""


def say(msg):
    """Progress and status lines go to stderr, so stdout keeps only results (e.g. the train CLI's JSON line)."""
    print(msg, file=sys.stderr, flush=True)


def fail(err):
    """Print a user error as one line and exit 2 (never a traceback for the user's mistakes)."""
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2)
