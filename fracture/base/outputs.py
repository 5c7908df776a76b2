"""Output directories: checked before any work, locked while a step writes, OS errors in one line.

Every writing step calls `prepare_out_dir` before it reads a single input, so a bad `--out` (a file, a path under
a file, a read-only or full file system, a name too long for the file system, a folder inside the input folder)
fails at once, naming the path, instead of after an hour of work. `out_dir_lock` then holds an exclusive lock
(the `filelock` library, an OS-level `flock` that the kernel releases when the process dies) for the whole run,
so two runs into one directory never interleave their files: the second fails at once with a message naming
the directory and the lock file.

The lock file lives beside the directory (`<parent>/.<name>.lock`), not inside it: a DVC stage hashes its whole
output directory, and the lock must not become part of the artifact.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fracture.base.errors import InputError


def os_error_message(err: OSError, path: Path | str | None = None) -> str:
    """One line for an OS error: "no space left on <path>" for a full disk, else "<path>: <reason>"."""
    where = err.filename if err.filename is not None else path
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on {where}" if where is not None else "no space left on device"
    reason = err.strerror or type(err).__name__
    return f"{where}: {reason}" if where is not None else reason


def write_error_message(err: OSError, path: Path | str) -> str:
    """One line for a failed write of `path`: "no space left on <path>", or "<path>: cannot write (<reason>)"."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on {path}"
    return f"{path}: cannot write ({err.strerror or type(err).__name__})"


def path_option(value: str, option: str) -> Path:
    """A path given on the command line; an empty string is refused (it would silently mean the cwd).

    Raises:
        InputError: naming the option.
    """
    if not value.strip():
        raise InputError(f"{option} is empty; give a path (use . for the current directory)")
    return Path(value)


def _file_in_the_way(out_dir: Path) -> str | None:
    """Why `out_dir` cannot be a directory because it, or a parent, is an existing non-directory; else None."""
    for candidate in (out_dir, *out_dir.parents):
        if candidate.exists() and not candidate.is_dir():
            return "is a file, not a directory" if candidate == out_dir else f"lies under the file {candidate}"
    return None


def prepare_out_dir(out_dir: Path, inputs: Sequence[Path] = ()) -> Path:
    """Create `out_dir` if needed and prove it writable, before any work.

    Args:
        out_dir: the output directory.
        inputs: input directories the output must not lie inside (a later run would read its own outputs).

    Returns:
        `out_dir`.

    Raises:
        InputError: one line naming the path and the reason (a file in the way, inside an input, read-only,
            no space, name too long, permission denied).
    """
    out_dir = Path(out_dir)
    problem = _file_in_the_way(out_dir)
    if problem:
        raise InputError(f"{out_dir}: {problem}")
    for src in inputs:
        if Path(src).is_dir() and out_dir.resolve().is_relative_to(Path(src).resolve()):
            raise InputError(f"{out_dir}: output folder inside the input folder {src}; a later run would read it")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir, prefix=".write-check-"):
            pass
    except OSError as err:
        raise InputError(os_error_message(err, out_dir)) from None
    return out_dir


def lock_path(out_dir: Path) -> Path:
    """The lock file of an output directory: `.<name>.lock` beside it."""
    resolved = Path(os.path.abspath(out_dir))
    return resolved.parent / f".{resolved.name or 'root'}.lock"


@contextmanager
def out_dir_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out_dir` for the block; fail at once when another run holds it.

    Raises:
        InputError: another process holds the lock, or the lock file cannot be created.
    """
    from filelock import FileLock, Timeout

    path = lock_path(out_dir)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(
            f"{out_dir}: another fracture run is writing here (lock {path}); wait for it or choose another --out"
        ) from None
    except OSError as err:
        raise InputError(os_error_message(err, path)) from None
    try:
        yield
    finally:
        lock.release()


def reserve_file(path: Path) -> None:
    """Allocate every block of a (sparse) file now, so a full disk raises ENOSPC here.

    A memory-mapped file on a full file system otherwise kills the process with SIGBUS on the first write to
    an unbacked page: no message, no clean-up of temporary files or worker processes.

    Raises:
        InputError: "no space left on <path>", or another OS error naming the path.
    """
    try:
        with open(path, "r+b") as fp:
            os.posix_fallocate(fp.fileno(), 0, os.fstat(fp.fileno()).st_size)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):  # file system without fallocate
            return
        raise InputError(os_error_message(err, path)) from None
