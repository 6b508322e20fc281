"""What every layer shares: UserError (a mistake the user can fix), say (the library's one way to report), atomic
writes and the check that a folder takes a file. Light: the command line imports it before torch, pandas or Ray.
"""
import contextlib
import errno
import os
import sys
from pathlib import Path

__all__ = ["DISK_ERRORS", "UserError", "check_writable", "reports_to", "say", "write_whole"]


class UserError(Exception):
    """A mistake in what the user gave us (data, flags, a space): shown as one line, exit status 2."""


_REPORTS = {"to": None}  # where say() writes instead of the console (reports_to)


def say(message, result=False):
    """The library's one way to tell the user something. Progress and warnings go to stderr and results (tables)
    with `result` to stdout, so stdout keeps only results (the train command's JSON line); inside `reports_to`
    both go to its stream."""
    stream = _REPORTS["to"] or (sys.stdout if result else sys.stderr)
    print(message, file=stream, flush=True)


@contextlib.contextmanager
def reports_to(stream):
    """Within this block every say() writes to `stream` (a log file, say): the race keeps its searches' reports
    out of its own console."""
    before, _REPORTS["to"] = _REPORTS["to"], stream
    try:
        yield stream
    finally:
        _REPORTS["to"] = before


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
    """Write `path` whole or not at all: into a temporary file beside it, then renamed over it, so a full disk or
    a kill mid-write leaves the previous version. `data`: bytes, text, or a function that writes a given path
    (torch.save, numpy.savez, DataFrame.to_csv)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")  # the suffix: np.savez keeps the name
    try:
        if callable(data):
            data(tmp)
        else:
            (tmp.write_bytes if isinstance(data, bytes) else tmp.write_text)(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
