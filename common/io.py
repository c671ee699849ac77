"""Atomic file and directory output that never deletes what the zoo did not write; human-readable sizes."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from common.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `dest`; rename it onto `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it a normal file's mode
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def check_output_dir(dest: str | os.PathLike, ours: Callable[[Path], bool], flag: str = "--output") -> Path:
    """`dest` as a Path if writing a directory there can lose nothing of the user's: it does not exist, or is an
    empty directory, or is one the zoo wrote (`ours(dest)`). Checked before long work, and again at commit."""
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir() or dest.is_symlink():
            raise UserError(f"{flag} {dest}: exists and is not a directory; pick a new path")
        if any(dest.iterdir()) and not ours(dest):
            raise UserError(f"{flag} {dest}: directory is not empty and was not written by this tool; "
                            "pick a new or empty directory (nothing was deleted)")
    return _writable_parent(dest, flag)


def check_output_file(dest: str | os.PathLike, flag: str = "--output") -> Path:
    """`dest` as a Path if a file can be written there: not a directory, in a directory we may write."""
    dest = Path(dest)
    if dest.is_dir():
        raise UserError(f"{flag} {dest}: is a directory; pass a file path")
    return _writable_parent(dest, flag)


def check_writable_dir(dest: str | os.PathLike, flag: str) -> Path:
    """`dest` as a Path if new files can be written into it: a directory we may write, or a path where one can be
    made."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{flag} {dest}: exists and is not a directory")
    if dest.is_dir() and not os.access(dest, os.W_OK):
        raise UserError(f"{flag} {dest}: cannot write in it")
    return _writable_parent(dest, flag)


def _writable_parent(dest: Path, flag: str) -> Path:
    """`dest` if its directory (or, when that is still to be made, its nearest existing ancestor) is writable."""
    parent = dest.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {dest}: cannot write in {parent}")
    return dest


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, ours: Callable[[Path], bool] = lambda p: False) -> Iterator[Path]:
    """Yield a temp directory beside `dest`; it replaces `dest` only if the block succeeds.

    An existing `dest` is replaced only if it is empty or `ours(dest)` (check_output_dir), and never deleted
    before the new one is in place: it is renamed aside, the new one renamed in, then the old one removed."""
    dest = check_output_dir(dest, ours)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
        check_output_dir(dest, ours)  # again: the destination may have changed during the work
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / "d")
        try:
            os.replace(tmp, dest)
        except OSError:
            if old is not None:
                os.replace(old / "d", dest)  # put the previous one back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staged_outputs(dest_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp directory inside `dest_dir`; when the block succeeds, every file written there is renamed into
    `dest_dir` (renames cannot fail for lack of space), so related outputs (a .pte and its tokenizer) are committed
    together: a failure while writing any of them leaves none of them."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staged.", dir=dest_dir))
    try:
        yield stage
        for f in sorted(stage.iterdir()):
            os.replace(f, dest_dir / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def read_text_arg(path: str | os.PathLike, flag: str) -> str:
    """The UTF-8 text of the file a flag names, or one UserError naming the flag and the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} {path}: {'not a file' if path.exists() else 'no such file'}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{flag} {path}: not UTF-8 text (malformed byte at offset {e.start})") from None


def human_size(path: str | os.PathLike) -> str:
    """Size of a file or directory as e.g. '98.2 MB'."""
    p = Path(path)
    return human_bytes(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size)


def human_bytes(n: float) -> str:
    """A byte count as e.g. '98.2 MB' (decimal units, as `ls -h --si`)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def peak_rss_mib() -> float:
    """This process's peak RSS. On Linux from /proc's VmHWM, the high-water mark of the process's own memory
    map: getrusage's ru_maxrss survives fork + exec, so a worker would report its parent's peak when that is
    higher (every row of a bench once showed the parent's 4383 MiB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
