"""Output files written atomically (a temporary file beside the target, then one rename) and
checked before any work: ``-o``, ``--out``, ``--csv`` of the commands that write one file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tcc_compiler.errors import InputError
from tcc_compiler.fsutil.paths import check_path, first_file_ancestor, plain_os_error
from tcc_compiler.sigint import InterruptedAfterWrite, deferred_sigint


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
    blocker = first_file_ancestor(parent)
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
        raise InputError(plain_os_error(p, exc, f"write {option}")) from None
    return p
