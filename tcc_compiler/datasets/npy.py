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
    return nchw


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
    """The N inputs of a ``.npy`` file, each copied out and checked for NaN/Inf when it is
    read (``tccc run`` streams its inputs: a file of a thousand arrays used to be copied
    whole, every value checked, before the first output).

    The header, dtype and shape are checked on construction (:func:`open_npy`). The mapping
    is not held between reads of different files: it is opened on a read and kept until the
    file's last array has been read (in order, one mapping at a time; a folder of many
    ``.npy`` files does not hold a file descriptor each).

    Attributes:
        path: the file. count: N, its number of inputs.
    """

    def __init__(self, path: Path, expected_shape: tuple[int, ...], layout: str = "NCHW"):
        self.path, self._expected, self._layout = path, expected_shape, layout
        self.count = int(open_npy(path, expected_shape, layout).shape[0])
        self._map: np.ndarray | None = None

    def __len__(self) -> int:
        return self.count

    def array(self, j: int, name: str) -> np.ndarray:
        """Input ``j`` as a new float32 NCHW array ``[1, C, H, W]``.

        Raises:
            InputError: naming ``name`` (the caller's label, e.g. ``FILE.npy[j]``): a NaN/Inf
                value in it; naming the file: it no longer reads as it did when checked.
        """
        if self._map is None:
            m = open_npy(self.path, self._expected, self._layout)
            if m.shape[0] != self.count:
                raise InputError(f"{self.path}: changed while being read (it held {self.count} "
                                 f"arrays, now {m.shape[0]})")
            self._map = m
        a = np.array(self._map[j:j + 1], dtype=np.float32, order="C")
        if j == self.count - 1:
            self._map = None   # read to its end: let the mapping go
        if not np.isfinite(a).all():
            bad = int(np.count_nonzero(~np.isfinite(a)))
            raise InputError(f"{name}: .npy array holds {bad} NaN/Inf value(s)")
        return a
