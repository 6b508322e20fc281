"""tune_cvae: hyperparameter search for the Lab4 conditional-VAE video predictor."""
import argparse
import contextlib
import errno
import os
import sys
from pathlib import Path


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


def check_writable(folder, flag):
    """`folder`, or the nearest folder above it that exists, must take a file, or a run would fail after its slow
    start: refused now with the reason (read-only, no permission, no space left); nothing is left behind."""
    folder = existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    probe = existing / f".tune_cvae_write_test.{os.getpid()}"
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is not a folder")
        probe.write_bytes(b"0" * 65536)
    except OSError as e:
        raise UserError(f"{flag} {folder}: cannot write there ({e.strerror or e})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # a full disk, a full quota, a read-only file system


def write_whole(path, data):
    """Write `path` whole or not at all: a temporary file beside it, then renamed over it, so a full disk or a kill
    mid-write leaves the previous version."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        (tmp.write_bytes if isinstance(data, bytes) else tmp.write_text)(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fail(err):
    """Print a user error as one line and exit 2 (never a traceback for the user's mistakes)."""
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2)
