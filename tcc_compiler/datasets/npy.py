"""``.npy`` arrays as model inputs: a float32 ``[N, C, H, W]`` (or, for an NHWC model,
``[N, H, W, C]``) file split into N NCHW arrays, its header checked before any data is read,
the arrays copied all at once (:func:`load_npy`) or one at a time as they are read
(:class:`NpyArrays`). Used by :class:`tcc_compiler.datasets.images.LazyInputs`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tcc_compiler.errors import InputError, first_line


def _check_npy_header_length(path: Path) -> None:
    """Refuse a ``.npy`` whose header-length field points past the end of the file (numpy
    would first allocate a buffer of that length, up to 4 GiB, to read the header), and a file
    that is no NumPy file at all (neither the ``.npy`` magic bytes nor an ``.npz``'s zip
    header: numpy then said "This file contains pickled (object) data", whatever it held).

    Raises:
        InputError: naming ``path``.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read .npy array: {exc.strerror}") from None
    if not head.startswith((b"\x93NUMPY", b"PK\x03\x04")):
        raise InputError(f"{path}: not a .npy array file (no NumPy header: write it with "
                         "numpy.save)")
    if len(head) >= 10 and head[:6] == b"\x93NUMPY":
        major = head[6]
        start, hlen = (10, int.from_bytes(head[8:10], "little")) if major == 1 else \
            (12, int.from_bytes(head[8:12], "little"))
        if start + hlen > size:
            raise InputError(f"{path}: cannot read .npy array: its header claims {hlen} bytes, "
                             f"the file holds {size}")


def _head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of ``path`` (a ``.npy`` file's header, its data at ``n``).

    Raises:
        InputError: naming ``path``: it cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise InputError(f"{path}: cannot read .npy array: {exc.strerror or exc}") from None


#: ONNX input layouts a ``.npy`` file may be given in (the model's, manifest ``onnx_layout``).
NPY_LAYOUTS = ("NCHW", "NHWC")


def _npy_nchw(array: np.ndarray, expected_shape: tuple[int, ...], layout: str
              ) -> np.ndarray | None:
    """``array`` as NCHW ``[N, C, H, W]`` when it is shaped as the model takes it: NCHW, or for
    an NHWC model (``layout``) ``[N, H, W, C]`` (transposed here; preferred when both shapes
    coincide, H == W == C, as that is what the ONNX model takes); None when neither fits."""
    if array.ndim != len(expected_shape) or array.shape[0] < 1:
        return None
    want = tuple(int(d) for d in expected_shape[1:])
    if layout == "NHWC" and len(want) == 3 and tuple(array.shape[1:]) == (want[1], want[2],
                                                                           want[0]):
        return array.transpose(0, 3, 1, 2)
    return array if tuple(array.shape[1:]) == want else None


def open_npy(path: Path, expected_shape: tuple[int, ...], layout: str = "NCHW"
             ) -> np.ndarray:
    """A ``.npy`` float32 array ``[N, C, H, W]`` (or, for an NHWC model, ``[N, H, W, C]``: the
    layout its ONNX input takes) as a read-only memory-mapped NCHW view ``[N, C, H, W]``, its
    header, dtype and shape checked; no value is read (:func:`load_npy`, :class:`NpyArrays`
    check them).

    The file is memory-mapped and its header checked before any data is copied, so a header
    claiming a huge shape costs nothing (numpy refuses to map past the end of the file).

    Raises:
        InputError: naming ``path``: not a ``.npy`` file, an unreadable header, a dtype other
            than float32, a shape unlike the model input's.
    """
    return _open(path, expected_shape, layout)[1]


def _open(path: Path, expected_shape: tuple[int, ...], layout: str
          ) -> tuple[np.memmap, np.ndarray]:
    """(the file's memory map as stored, its NCHW view): :func:`open_npy`'s checks."""
    _check_npy_header_length(path)
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises Value/Overflow/Token...
        reason = first_line(exc, 10**6)
        if "mmap length" in reason:
            reason = "its header claims more data than the file holds (truncated?)"
        raise InputError(f"{path}: cannot read .npy array: {reason}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive renamed to .npy
        raise InputError(f"{path}: not a .npy array file (an .npz archive?)")
    want = tuple(int(d) for d in expected_shape[1:])
    if array.dtype != np.float32:
        raise InputError(f"{path}: .npy dtype is {array.dtype}, expected float32 "
                         f"(save it with array.astype(np.float32))")
    nchw = _npy_nchw(array, expected_shape, layout)
    if nchw is None:
        forms = f"[N, {', '.join(map(str, want))}]"
        if layout == "NHWC" and len(want) == 3:
            forms = f"NHWC [N, {want[1]}, {want[2]}, {want[0]}] or NCHW {forms}"
        raise InputError(f"{path}: .npy shape {tuple(array.shape)} does not match the model input "
                         f"{forms} (N >= 1)")
    return array, nchw


def load_npy(path: Path, expected_shape: tuple[int, ...], layout: str = "NCHW"
             ) -> list[np.ndarray]:
    """A ``.npy`` float32 array ``[N, C, H, W]`` (or, for an NHWC model, ``[N, H, W, C]``: the
    layout its ONNX input takes) split into N NCHW arrays ``[1, C, H, W]``, all copied and
    checked now (:func:`open_npy`; :class:`NpyArrays` reads them one at a time).

    Raises:
        InputError: as :func:`open_npy`, or a NaN/Inf value anywhere in the file.
    """
    nchw = open_npy(path, expected_shape, layout)
    if not np.isfinite(nchw).all():
        bad = int(np.count_nonzero(~np.isfinite(nchw)))
        raise InputError(f"{path}: .npy array holds {bad} NaN/Inf value(s)")
    return [np.array(nchw[i:i + 1], dtype=np.float32, order="C") for i in range(nchw.shape[0])]


class NpyArrays:
    """The N inputs of a ``.npy`` file, each read, copied out and checked for NaN/Inf when it
    is read (``tccc run`` streams its inputs: a file of a thousand arrays used to be copied
    whole, every value checked, before the first output).

    The header, dtype and shape are checked on construction (:func:`open_npy`). Array ``j``
    of a C-order file (what ``numpy.save`` writes) is then read on its own, its bytes at
    ``header + j * C*H*W*4``, the file opened for that read only (its header read again and
    compared with the one checked: a file replaced by another while the run streams it is
    refused, not read at the old offsets): neither a file descriptor
    nor a mapping is held between reads (a folder of many ``.npy`` files holds none; a read
    map would keep every page read resident to the end of the file: a 184 MiB file of 320
    Lite0 inputs kept the run's peak RSS 184 MiB up). A Fortran-order file is mapped anew
    for each read.

    Attributes:
        path: the file. count: N, its number of inputs.
    """

    def __init__(self, path: Path, expected_shape: tuple[int, ...], layout: str = "NCHW"):
        self.path, self._expected, self._layout = path, expected_shape, layout
        stored, nchw = _open(path, expected_shape, layout)
        self.count = int(stored.shape[0])
        self._item_shape = tuple(int(d) for d in stored.shape[1:])   # as stored (NCHW/NHWC)
        self._nhwc = nchw is not stored   # stored NHWC: transposed to NCHW on reading
        self._offset = int(stored.offset) if stored.flags.c_contiguous else None
        self._nbytes = 4 * int(np.prod(self._item_shape))
        self._header = _head(path, self._offset) if self._offset is not None else b""

    def __len__(self) -> int:
        return self.count

    def array(self, j: int, name: str) -> np.ndarray:
        """Input ``j`` as a new float32 NCHW array ``[1, C, H, W]`` (C-contiguous, writable).

        Raises:
            InputError: naming ``name`` (the caller's label, e.g. ``FILE.npy[j]``): a NaN/Inf
                value in it; naming the file: it cannot be read, or no longer holds the
                arrays it held when checked.
        """
        if self._offset is None:   # Fortran order: map, copy, let go
            a = np.array(open_npy(self.path, self._expected, self._layout)[j:j + 1],
                         dtype=np.float32, order="C")
        else:
            buf = bytearray(self._nbytes)
            try:
                with open(self.path, "rb") as f:
                    head = f.read(self._offset)
                    f.seek(self._offset + j * self._nbytes)
                    got = f.readinto(buf)
            except OSError as exc:
                raise InputError(f"{self.path}: cannot read .npy array {j}: "
                                 f"{exc.strerror or exc}") from None
            if head != self._header:
                raise InputError(f"{self.path}: changed while being read (its header is no "
                                 f"longer the one checked, at array {j} of {self.count})")
            if got != self._nbytes:
                raise InputError(f"{self.path}: changed while being read (array {j} of "
                                 f"{self.count} ends past the end of the file)")
            a = np.frombuffer(buf, np.float32).reshape((1,) + self._item_shape)
            if self._nhwc:
                a = np.ascontiguousarray(a.transpose(0, 3, 1, 2))
        if not np.isfinite(a).all():
            bad = int(np.count_nonzero(~np.isfinite(a)))
            raise InputError(f"{name}: .npy array holds {bad} NaN/Inf value(s)")
        return a
