"""Path checks and small file-system helpers shared by the output writers: refusing paths the
OS cannot look up, mount-point detection, plain-words OSError messages, fsync of a folder,
a file's SHA-256.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from tcc_compiler.errors import InputError


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists (or we may not signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def plain_os_error(dest: Path, exc: OSError, action: str) -> str:
    """One line saying which path failed and why, in plain words (errno names, not the
    kernel's wording: EBUSY from a read-only mount used to read "Device or resource busy"):
    ``dest`` or the ancestor of it the OS names; for another file the OS names (the temporary
    file written beside ``dest`` before it is renamed into place), that file's folder."""
    err = exc.errno
    where = Path(exc.filename) if exc.filename else dest
    if where != dest and where not in dest.parents:
        where = where.parent   # a temporary file of ours beside dest: name its folder
    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"{where} is read-only or not writable by you"
    elif err == errno.EBUSY:
        reason = f"{where} is busy (a mount point or in use); choose another folder"
    elif err == errno.EEXIST or err == errno.ENOTDIR:
        reason = f"{first_file_ancestor(dest) or where} is a file, not a folder"
    else:  # e.g. ENOSPC: the system's own words ("No space left on device") are plain
        reason = exc.strerror or str(exc)
    return f"{dest}: cannot {action}: {reason}"


def first_file_ancestor(path: Path) -> Path | None:
    """The first existing non-folder on the way from the root to ``path`` (None if none)."""
    for anc in reversed([path, *path.parents]):
        if anc.exists() and not anc.is_dir():
            return anc
    return None


def check_path(path: str | os.PathLike, what: str = "") -> None:
    """Refuse a path the OS cannot even look up, with the reason in words (these used to be
    internal errors: pathlib raises on them or loops).

    Raises:
        InputError: a symbolic link loop on the way to ``path`` (ELOOP), a name longer than
            the file system allows (ENAMETOOLONG), or a component that is not a folder.
    """
    try:
        os.stat(path)
    except OSError as exc:
        reason = {errno.ELOOP: "symbolic link loop (a link that points back to itself)",
                  errno.ENAMETOOLONG: "file name too long for the file system (at most 255 "
                                      "bytes a name)"}.get(exc.errno)
        if reason is not None:
            shown = str(path) if len(str(path)) <= 80 else str(path)[:77] + "..."
            raise InputError(f"{what + ' ' if what else ''}{shown}: {reason}") from None


def is_mount_point(path: str | os.PathLike) -> bool:
    """True when ``path`` (an existing folder, symlinks resolved) is a mount point: another
    device than its parent (os.path.ismount), or listed in /proc/self/mountinfo (a bind mount
    of a folder of the same file system, e.g. a container volume)."""
    real = os.path.realpath(path)
    if os.path.ismount(real):
        return True
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            points = {line.split()[4].replace("\\040", " ") for line in f if line.strip()}
    except (OSError, IndexError):
        return False
    return real in points


def fsync_dir(folder: Path) -> None:
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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
