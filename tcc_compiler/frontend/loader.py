"""Load an ONNX model from disk safely and fix its input dims.

Covers what real exporters write: initializers listed as graph inputs (IR version 3), external
data files (kept inside the model's folder), symbolic or missing dims fixed by ``--input``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from tcc_compiler.errors import InputError, ModelError

log = logging.getLogger(__name__)


def parse_input_spec(text: str) -> tuple[int, int, int]:
    """Parse ``--input`` ``"WxHxC"`` (width x height x channels) into (W, H, C).

    Raises:
        InputError: not three positive integers separated by 'x', or absurd sizes.
    """
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        w, h, c = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"--input '{text}': expected WxHxC, e.g. 224x224x3 "
                         "(width x height x channels)") from None
    if min(w, h, c) <= 0 or max(w, h) > 8192 or c > 64:
        raise InputError(f"--input '{text}': width and height must be 1..8192 and channels "
                         "1..64")
    return w, h, c


def _check_external_data(model: onnx.ModelProto, base: Path) -> None:
    """Refuse external-data references that leave the model's folder or are missing."""
    base = base.resolve()
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in init.external_data}
        loc = info.get("location", "")
        target = (base / loc).resolve()
        if os.path.isabs(loc) or base not in target.parents:
            raise ModelError(f"initializer '{init.name}': external data location '{loc}' "
                             "points outside the model's folder")
        if not target.is_file():
            raise ModelError(f"initializer '{init.name}': external data file '{loc}' not found")
        size = target.stat().st_size
        offset = int(info.get("offset", 0) or 0)
        length = int(info.get("length", 0) or 0)
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelError(f"initializer '{init.name}': external data range "
                             f"{offset}+{length} exceeds '{loc}' ({size} bytes)")


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file, including external data, without following paths outside its folder.

    Returns:
        The ModelProto with external tensors loaded in memory.

    Raises:
        InputError: the file does not exist or is not a file.
        ModelError: the file is not a valid ONNX protobuf or its external data is bad.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"{p}: not a valid ONNX model ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{p}: not a valid ONNX model (empty graph)")
    _check_external_data(model, p.parent)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{p}: cannot load external data ({exc})") from None
    return model
