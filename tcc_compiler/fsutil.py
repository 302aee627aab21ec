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
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tcc_compiler.errors import InputError
from tcc_compiler.sigint import InterruptedAfterWrite, deferred_sigint

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

#: Files tccc writes into an output folder (compile, ``analyze``'s default ``--out``, the
#: conventional ``report.html``). A recompile replaces the folder, so these go (the new output
#: has fresh ones); any other entry makes :func:`atomic_dir` refuse, so it never deletes a
#: user's files.
OUTPUT_FILES = frozenset({
    "npu_cmd.bin", "quantized_network.bin", "manifest.json", "report.json", "report.csv",
    "quantized.tir", "quantized.npz", "calib_table.json", "analysis.json", "report.html",
    "timeline.json", "npu_cmd_stream.bin", "quantized_network_stream.bin",
})


#: Entries of a segmented model's folder (specs/manifest.md): ``npu_<k>/`` sub-folders holding
#: :data:`OUTPUT_FILES` only, and ``host_<k>.onnx`` files.
SEGMENT_DIR_RE = re.compile(r"npu_[0-9]+")
SEGMENT_FILE_RE = re.compile(r"host_[0-9]+\.onnx")


def is_output_entry(entry: Path) -> bool:
    """True for an entry tccc writes into an output folder: a file of :data:`OUTPUT_FILES`, a
    ``host_<k>.onnx`` file, or an ``npu_<k>/`` folder holding only output files."""
    if entry.is_symlink():
        return False
    if entry.is_file():
        return entry.name in OUTPUT_FILES or bool(SEGMENT_FILE_RE.fullmatch(entry.name))
    if entry.is_dir() and SEGMENT_DIR_RE.fullmatch(entry.name):
        return all(e.is_file() and not e.is_symlink() and e.name in OUTPUT_FILES
                   for e in entry.iterdir())
    return False


def foreign_entries(folder: str | os.PathLike) -> list[str]:
    """Names in ``folder`` (sorted) that tccc does not write (:func:`is_output_entry`):
    other sub-folders and any other file. Empty when ``folder`` is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(e.name + ("/" if e.is_dir() else "") for e in folder.iterdir()
                  if not is_output_entry(e))


def _plain_os_error(dest: Path, exc: OSError, action: str) -> str:
    """One line saying which path failed and why, in plain words (errno names, not the
    kernel's wording: EBUSY from a read-only mount used to read "Device or resource busy")."""
    err = exc.errno
    where = Path(exc.filename) if exc.filename else dest
    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"{where} is read-only or not writable by you"
    elif err == errno.EBUSY:
        reason = f"{where} is busy (a mount point or in use); choose another folder"
    elif err == errno.EEXIST or err == errno.ENOTDIR:
        reason = f"{_first_file_ancestor(dest) or where} is a file, not a folder"
    else:  # e.g. ENOSPC: the system's own words ("No space left on device") are plain
        reason = exc.strerror or str(exc)
    return f"{dest}: cannot {action}: {reason}"


def _first_file_ancestor(path: Path) -> Path | None:
    """The first existing non-folder on the way from the root to ``path`` (None if none)."""
    for anc in reversed([path, *path.parents]):
        if anc.exists() and not anc.is_dir():
            return anc
    return None


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
        raise InputError(_plain_os_error(dest, exc, "create the output folder")) from None
    try:
        yield tmp
        _publish_modes(tmp)
        _fsync_tree(tmp)
        # from here on the swap and its clean-up run to the end: a Ctrl-C is held and
        # reported afterwards as InterruptedAfterWrite (the new output is in place)
        with deferred_sigint() as intr:
            _swap_in(tmp, dest, parent)
            intr.published(shown)
        if intr.hit:
            raise InterruptedAfterWrite(shown)
    except OSError as exc:  # full disk, permissions, quota: the user's to fix, not a bug
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(_plain_os_error(dest, exc, "write the output") + "; the previous "
                         "contents are unchanged") from None
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
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
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
        raise InputError(_plain_os_error(dest, exc, "write into the output folder")) from None
    try:
        yield tmp
        _publish_modes(tmp)
        _fsync_tree(tmp)
        with deferred_sigint() as intr:
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
            _fsync_dir(dest)
            intr.published(shown)
        if intr.hit:
            raise InterruptedAfterWrite(shown)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(_plain_os_error(dest, exc, "write the output")) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    _fsync_dir(parent)


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
    blocker = _first_file_ancestor(dest)
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


def _check_regular(path: Path, option: str) -> Path:
    """``path`` with symlinks resolved (os.path.realpath); InputError when that exists and is
    not a regular file (a device such as /dev/full, a FIFO, a socket), which a rename would
    replace instead of write into."""
    real = Path(os.path.realpath(path))
    if real.exists() and not real.is_file():
        what = "is a folder; give a file name" if real.is_dir() else "not a regular file"
        raise InputError(f"{option + ' ' if option else ''}{path}: {what}")
    return real


def atomic_write_bytes(path: str | os.PathLike, data: bytes, option: str = "") -> None:
    """Write ``data`` to ``path`` via a temporary file and os.replace (never half-written).
    The file gets the mode a plain open() would (0666 less the umask), not mkstemp's 0600.

    A symlink ``path`` stays a symlink: the file it points at is replaced (the temporary file
    is created in that file's folder).

    Raises:
        InputError: ``path`` (after symlinks) exists and is not a regular file; ``option``
            (e.g. ``"-o"``) prefixes the message.
        OSError: the write itself fails (full disk, permissions).
        InterruptedAfterWrite: Ctrl-C arrived while the file was put in place (it is).
    """
    path = _check_regular(Path(path), option)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with deferred_sigint() as intr:  # Ctrl-C now: reported once the file is in place
            os.replace(tmp, path)
            intr.published(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if intr.hit:
        raise InterruptedAfterWrite(path)


def check_output_file(path: str | os.PathLike, option: str, *,
                      reads: str | os.PathLike | None = None, own: tuple[str, ...] = (),
                      inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Validate a file path given for output (``-o``, ``--out``, ``--csv``...) before any work.

    Args:
        path: the file to write later. option: the option naming it, for the message.
        reads: the compiled folder the command reads, if any: an existing file in it (or in
            its sub-folders) is refused unless its name is one of ``own`` (the files that
            command itself writes there, e.g. ``analysis.json``). ``tccc report DIR -o
            DIR/manifest.json`` used to replace the manifest and leave a folder no command
            loads.
        inputs: other files the command reads (``tccc analyze``'s model): refused as outputs.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: ``path`` is empty, a symlink loop or too long a name; is a folder or
            (after symlinks) exists and is not a regular file (``/dev/full``, a FIFO); its
            folder is missing or is a file, or that folder is not writable (read-only file system,
            permissions); it is a file of ``reads`` or one of ``inputs``. One line naming the
            path.
    """
    if not str(path):  # Path("") is ".": an empty -o would mean the current folder
        raise InputError(f"{option} '': empty path; give a file name")
    check_path(path, option)
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {p}: is a folder; give a file name")
    _refuse_overwriting_inputs(p, option, reads, own, inputs)
    parent = _check_regular(p, option).parent  # symlinks: check the folder of the target
    blocker = _first_file_ancestor(parent)
    if blocker is not None:
        raise InputError(f"{option} {p}: {blocker} is a file, not a folder")
    if not parent.is_dir():
        raise InputError(f"{option} {p}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {p}: folder {parent} is read-only or not writable by you")
    return p


def _refuse_overwriting_inputs(p: Path, option: str, reads, own: tuple[str, ...],
                               inputs) -> None:
    """:func:`check_output_file`'s refusal of an output that is one of the command's inputs."""
    if not p.is_file():
        return
    for f in inputs:
        try:
            same = os.path.samefile(p, f)
        except OSError:   # the input is missing: its own check names it
            continue
        if same:
            raise InputError(f"{option} {p}: is {f}, an input of this command; writing it "
                             "would replace it: give another file name")
    if reads is None:
        return
    try:
        target, folder = p.resolve(), Path(reads).resolve()
    except (OSError, RuntimeError):   # a symlink loop: the later checks name it
        return
    if folder in target.parents and not (target.parent == folder and target.name in own):
        raise InputError(f"{option} {p}: is {target.relative_to(folder)} of the compiled "
                         f"folder {reads} this command reads; writing it would break that "
                         "folder: give a file name outside it")


def write_output_file(path: str | os.PathLike, data: bytes | str, option: str) -> Path:
    """:func:`check_output_file`, then :func:`atomic_write_bytes` (``str`` is written as
    UTF-8), so a failure never leaves a half-written file.

    Returns:
        The path written.

    Raises:
        InputError: as :func:`check_output_file`, or an OSError while writing (one line).
    """
    p = check_output_file(path, option)
    try:
        atomic_write_bytes(p, data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as exc:
        raise InputError(_plain_os_error(p, exc, f"write {option}")) from None
    return p


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
