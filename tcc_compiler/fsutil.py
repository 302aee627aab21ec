"""Atomic output writing: build a folder next to the target, then swap it into place.

Guarantees of :func:`atomic_dir` (tested by killing a compile midway, tests/test_outputs_atomic):

* the destination folder always holds either the complete previous output or the complete new
  one; on Linux the two are exchanged by one ``renameat2(RENAME_EXCHANGE)`` call, so there is
  no instant at which the destination is missing;
* a failing build (any exception) removes its staging folder and leaves the destination as it
  was;
* a build killed outright (SIGKILL, power loss) can leave only a hidden staging folder
  ``.<name>.tmp-<pid>-*`` beside the destination, never a partial file inside it; the next
  :func:`atomic_dir` for the same destination deletes staging folders whose process is gone, and
  restores the previous output if a kill fell between the two renames of the fallback path.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tcc_compiler.errors import InputError

log = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists (or we may not signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _staging_pid(entry: str, name: str) -> int | None:
    """The pid encoded in a staging folder name ``.<name>.(tmp|old)-<pid>-<random>``."""
    for kind in ("tmp", "old"):
        prefix = f".{name}.{kind}-"
        if entry.startswith(prefix):
            pid = entry[len(prefix):].split("-", 1)[0]
            return int(pid) if pid.isdigit() else None
    return None


def clean_stale_staging(dest: str | os.PathLike) -> list[Path]:
    """Delete staging folders of ``dest`` left by processes that no longer exist.

    If ``dest`` is missing and a dead process's ``.<name>.old-*`` folder still holds the
    previous output (a kill between the two renames of the non-Linux fallback), that output is
    moved back to ``dest`` first.

    Returns:
        The staging folders removed.
    """
    dest = Path(dest)
    parent = dest.resolve().parent
    removed: list[Path] = []
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return removed
    for entry in entries:
        pid = _staging_pid(entry, dest.name)
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        path = parent / entry
        prev = path / "prev"
        if entry.startswith(f".{dest.name}.old-") and prev.is_dir() and not dest.exists():
            os.replace(prev, dest)
            log.warning("%s: restored the previous output left by killed process %d", dest, pid)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False when unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False  # kernel or file system without RENAME_EXCHANGE: use the fallback
    raise OSError(err, os.strerror(err), str(b))


#: A folder holding this file is a tccc output folder that a new compile may replace.
OUTPUT_MARKER = "manifest.json"


@contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder beside ``dest``; on success it replaces ``dest`` atomically.

    On any exception the staging folder is removed and ``dest`` is left as it was. An existing
    ``dest`` is exchanged with the staging folder in one step where the OS allows it (Linux
    ``renameat2``), else renamed aside and deleted only after the new one is in place.

    Raises:
        InputError: ``dest`` exists and is not a folder, its parent cannot be written, or an
            OSError (e.g. a full disk) occurs while the staging folder is written or published.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest}: exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / OUTPUT_MARKER).is_file():
        # replacing the folder would delete whatever the user keeps there (even the model)
        raise InputError(f"{dest}: folder is not empty and is not a tccc output folder (no "
                         f"{OUTPUT_MARKER}); choose a new or empty folder for -o")
    parent = dest.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale_staging(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise InputError(f"{dest}: cannot create output folder ({exc.strerror})") from None
    try:
        yield tmp
        _publish_modes(tmp)
        _fsync_tree(tmp)
        if dest.exists() and _exchange(tmp, dest):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous output
        else:
            old = None
            if dest.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-{os.getpid()}-",
                                            dir=parent))
                os.replace(dest, old / "prev")
            os.replace(tmp, dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(parent)
    except OSError as exc:  # full disk, permissions, quota: the user's to fix, not a bug
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"{dest}: cannot write the output ({exc.strerror or exc}); the "
                         "previous contents are unchanged") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(folder: Path) -> None:
    """fsync a folder so renames inside it survive a power loss (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file in ``folder`` and the folder itself before it is published."""
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _publish_modes(folder: Path) -> None:
    """Give the new folder and its files the modes a plain mkdir/open would (umask applied);
    mkdtemp/mkstemp create them private."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for p in folder.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and os.replace (never half-written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
