"""Atomic output folders: build a folder next to the target, then swap it into place.

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
from tcc_compiler.fsutil.entries import (OUTPUT_FILES, OUTPUT_MARKER, foreign_entries,
                                         is_output_entry)
from tcc_compiler.fsutil.paths import (check_path, first_file_ancestor, fsync_dir,
                                       is_mount_point, pid_alive, plain_os_error)
from tcc_compiler.sigint import InterruptedAfterWrite, deferred_sigint

log = logging.getLogger(__name__)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


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
        if pid is None or pid == os.getpid() or pid_alive(pid):
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


@contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder beside ``dest``; on success it replaces ``dest`` atomically.

    On any exception the staging folder is removed and ``dest`` is left as it was. An existing
    ``dest`` is exchanged with the staging folder in one step where the OS allows it (Linux
    ``renameat2``), else renamed aside and deleted only after the new one is in place.

    Raises:
        InputError: ``dest`` exists and is not a folder; it holds entries tccc does not write
            (:func:`foreign_entries`: replacing it would delete them); its parent cannot be
            created or written; or an OSError (e.g. a full disk) occurs while the staging
            folder is written or published.
    """
    shown = check_output_folder(dest)
    # A symlinked destination stays a symlink: the staging folder is built beside, and
    # swapped onto, the folder the link points at (os.path.realpath).
    dest = Path(os.path.realpath(shown))
    if dest.is_dir() and is_mount_point(dest):  # cannot be renamed: fill it in place
        with _in_place(dest, shown) as tmp:
            yield tmp
        return
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale_staging(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise InputError(plain_os_error(dest, exc, "create the output folder")) from None
    with _published(tmp, dest, shown, lambda: _swap_in(tmp, dest, parent),
                    "; the previous contents are unchanged"):
        yield tmp


@contextmanager
def _published(tmp: Path, dest: Path, shown: Path, publish, note: str = "") -> Iterator[None]:
    """Run the body (which fills the staging folder ``tmp``), then give ``tmp`` plain modes,
    fsync it and call ``publish()`` with Ctrl-C held until it returns (then reported as
    :class:`InterruptedAfterWrite`: the new output is in place). On any exception ``tmp`` is
    removed; an OSError (full disk, permissions, quota: the user's to fix, not a bug) becomes
    an InputError naming ``dest``, with ``note`` appended."""
    try:
        yield
        _publish_modes(tmp)
        _fsync_tree(tmp)
        with deferred_sigint() as intr:
            publish()
            intr.published(shown)
        if intr.hit:
            raise InterruptedAfterWrite(shown)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(plain_os_error(dest, exc, "write the output") + note) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: Prefix of the staging folder :func:`atomic_dir` makes inside a mount point.
_INNER_STAGING = ".tccc-staging-"


def _clean_inner_staging(dest: Path) -> None:
    """Remove staging folders inside ``dest`` left by processes that no longer exist."""
    try:
        entries = os.listdir(dest)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(_INNER_STAGING):
            pid = entry[len(_INNER_STAGING):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(dest / entry, ignore_errors=True)


@contextmanager
def _in_place(dest: Path, shown: Path) -> Iterator[Path]:
    """:func:`atomic_dir` for a mount point (a container volume), which cannot be renamed or
    exchanged: the output is staged in a hidden folder inside it, then each file replaces its
    namesake with one rename (never half-written). manifest.json is removed first and put
    back last, so while the files change the folder is no output at all (tccc load/run refuse
    it) rather than a mix of two compiles; a kill leaves only the hidden staging folder, which
    the next compile removes."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{_INNER_STAGING}{os.getpid()}-", dir=dest))
    except OSError as exc:
        raise InputError(plain_os_error(dest, exc, "write into the output folder")) from None
    with _published(tmp, dest, shown, lambda: _replace_files(tmp, dest)):
        yield tmp


def _replace_files(tmp: Path, dest: Path) -> None:
    """Move the entries of the staging folder ``tmp`` (inside ``dest``) over their namesakes
    in ``dest``, manifest.json removed first and put back last, remove the previous output's
    other entries, then ``tmp``."""
    new = sorted(p.name for p in tmp.iterdir())
    (dest / OUTPUT_MARKER).unlink(missing_ok=True)
    for name in new:
        if name != OUTPUT_MARKER:
            if (dest / name).is_dir():  # a segment folder: a rename cannot replace it
                shutil.rmtree(dest / name)
            os.replace(tmp / name, dest / name)
    for name in sorted(OUTPUT_FILES - set(new) - {OUTPUT_MARKER}):
        (dest / name).unlink(missing_ok=True)  # the previous output's extra files
    for e in sorted(dest.iterdir()):  # the previous output's segments
        if e.name not in new and e.name != OUTPUT_MARKER and is_output_entry(e) \
                and e.name not in OUTPUT_FILES:
            shutil.rmtree(e) if e.is_dir() else e.unlink()
    if OUTPUT_MARKER in new:
        os.replace(tmp / OUTPUT_MARKER, dest / OUTPUT_MARKER)
    shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(dest)


def _swap_in(tmp: Path, dest: Path, parent: Path) -> None:
    """Publish the staging folder ``tmp`` as ``dest`` (an existing ``dest`` is exchanged with
    it in one step where the OS allows, else renamed aside and deleted after) and remove the
    previous output."""
    if dest.exists() and _exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous output
    else:
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-{os.getpid()}-", dir=parent))
            os.replace(dest, old / "prev")
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_dir(parent)


def check_output_folder(dest: str | os.PathLike) -> Path:
    """The checks :func:`atomic_dir` makes before writing, callable up front (``tccc compile``
    runs them before compiling, so a bad ``-o`` fails in a second, not after the compile).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: ``dest`` is empty (``-o ""`` used to mean the current folder), a symlink
            loop or too long a name; exists and is not a folder; a path component is a file; it
            holds
            entries tccc does not write (:func:`foreign_entries`); or the nearest existing
            ancestor folder is not writable.
    """
    if not os.fspath(dest):  # before Path(), which turns "" into "." (the current folder)
        raise InputError("output folder: empty path (give a folder name; '.' for the current "
                         "folder)")
    dest = Path(dest)
    check_path(dest, "output folder")
    if dest.exists() and not dest.is_dir():  # a file, device, FIFO (also via a symlink)
        raise InputError(f"{dest}: exists and is not a folder")
    blocker = first_file_ancestor(dest)
    if blocker is not None:
        raise InputError(f"{dest}: cannot create the output folder: {blocker} is a file, "
                         "not a folder")
    if dest.is_dir() and is_mount_point(dest):
        _clean_inner_staging(dest)
    foreign = foreign_entries(dest)
    if foreign:  # replacing the folder would delete whatever the user keeps there
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more"
                                          if len(foreign) > 5 else "")
        what = "is a tccc output folder but also holds" if (dest / OUTPUT_MARKER).is_file() \
            else "is not a tccc output folder: it holds"
        raise InputError(f"{dest}: {what} files tccc does not write ({shown}), which replacing "
                         "it would delete; move them out or choose a new or empty folder "
                         "(-o / save())")
    if dest.is_dir() and is_mount_point(dest):  # written in place (atomic_dir): the folder
        anc = dest                               # itself must be writable, not its parent
    else:
        anc = Path(os.path.realpath(dest)).parent
        while not anc.exists():
            anc = anc.parent
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"{dest}: cannot create the output folder: {anc} is read-only or "
                         "not writable by you")
    return dest


def _fsync_tree(folder: Path) -> None:
    """fsync every file in ``folder`` and the folder itself before it is published."""
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(folder)


def _publish_modes(folder: Path) -> None:
    """Give the new folder and its files the modes a plain mkdir/open would (umask applied);
    mkdtemp/mkstemp create them private."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for p in folder.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)
