"""run_best's output folder, written as a whole: into a hidden folder beside it, swapped in at the end, so that a
failure, Ctrl-C, SIGTERM or a full disk leaves an earlier output as it was; and never over a folder it did not
write.
"""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from tune_cvae.common import DISK_ERRORS, UserError


OUT_MARK = ".run_best"  # in every folder run_best.py writes: the only non-empty folders it replaces


def check_out(out):
    """run_best replaces only what it wrote: an --out that holds anything without its mark is refused before
    any work."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / OUT_MARK).is_file():
        raise UserError(f"{out}: holds files run_best.py did not write; pass an empty or new --out folder "
                        f"(nothing was changed)")


@contextlib.contextmanager
def staged_output(out):
    """A fresh hidden folder beside `out` to write into: on success it replaces `out` (marked as run_best's),
    on any failure, Ctrl-C or SIGTERM it is removed and `out` stays as it was; a full or read-only disk is one
    line."""
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in DISK_ERRORS:
            raise UserError(f"{out}: {e.strerror} while writing it; any earlier output is unchanged") from None
        raise
    (tmp / OUT_MARK).write_text("written by run_best.py, which replaces this folder when run again\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
