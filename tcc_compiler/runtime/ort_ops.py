"""Run compiled NPU segments inside ONNX Runtime (optional extra ``tccc[ort]``).

``tccc export-onnx DIR -o model.onnx --ort`` (:mod:`tcc_compiler.export.ort_model`) writes a
model in which each NPU segment is one node of domain :data:`DOMAIN`, op type
``TcccNpuProgram<k>`` (``k`` = its number of outputs, 1..:data:`MAX_OUTPUTS`; a Python custom
op declares a fixed output count; ``TcccNpuProgram<k>_<m>in`` for a segment of a segmented
model reading ``m`` > 1 tensors), with two string attributes:

* ``folder``: the compiled output folder (absolute path at export time; a relative path is
  taken from the current directory), validated as ``tccc run`` does when first used;
* ``outputs``: JSON list of the NPU outputs the node returns, in order (manifest names).

Its input is the float32 model input (shaped as the ONNX model took it; a segment's inputs,
in its program's input order); its outputs are the
NPU outputs dequantized to float32, exactly the arrays ``tccc run`` computes: the node runs the
program on the reference executor (:class:`~tcc_compiler.runtime.loaded.LoadedProgram`).
The op is implemented with onnxruntime-extensions' Python custom ops (``onnx_op``), loaded
into a session by :func:`session_options`::

    import onnxruntime as ort
    from tcc_compiler.runtime.ort_ops import session_options
    sess = ort.InferenceSession("model.onnx", session_options("model.onnx"))

(the path is optional: with it, the referenced folders are validated first, see
:func:`check_model`; an error inside the op terminates the process with its message).
"""

from __future__ import annotations

import json
import threading

import numpy as np

from tcc_compiler.errors import InputError

#: The domain onnxruntime-extensions registers Python custom ops in.
DOMAIN = "ai.onnx.contrib"
#: Most outputs one NPU segment node may have (one op type is registered per count).
MAX_OUTPUTS = 8
#: Most inputs one NPU segment node may have (one op type per count: a segment of a
#: segmented model may read several tensors).
MAX_INPUTS = 8

_LOCK = threading.Lock()
_PROGRAMS: dict[str, object] = {}
_REGISTERED = False


def op_type(n_outputs: int, n_inputs: int = 1) -> str:
    """The custom op type of an NPU segment with ``n_outputs`` outputs and ``n_inputs``
    inputs: ``TcccNpuProgram<k>``, or ``TcccNpuProgram<k>_<m>in`` for ``m`` > 1 inputs.

    Raises:
        InputError: ``n_outputs`` outside 1..:data:`MAX_OUTPUTS`, ``n_inputs`` outside
            1..:data:`MAX_INPUTS`.
    """
    if not 1 <= n_outputs <= MAX_OUTPUTS or not 1 <= n_inputs <= MAX_INPUTS:
        raise InputError(f"an NPU segment with {n_inputs} inputs and {n_outputs} outputs "
                         f"cannot be exported for ONNX Runtime (1..{MAX_INPUTS} inputs, "
                         f"1..{MAX_OUTPUTS} outputs)")
    return f"TcccNpuProgram{n_outputs}" + (f"_{n_inputs}in" if n_inputs > 1 else "")


def _program(folder: str):
    """The loaded program of ``folder`` (cached: decoding the binaries takes a while)."""
    from tcc_compiler.runtime import load_program

    with _LOCK:
        if folder not in _PROGRAMS:
            _PROGRAMS[folder] = load_program(folder)
        return _PROGRAMS[folder]


def run_segment(folder: str, outputs: list[str], *xs: np.ndarray) -> list[np.ndarray]:
    """Run one NPU segment: float32 inputs (each its ONNX shape, in the program's input
    order) -> its float32 outputs.

    Raises:
        InputError, FormatError: the folder is missing or invalid; ExecutionError: executor
            fault (all TccError: ONNX Runtime reports them as the node's failure).
    """
    prog = _program(folder)
    if len(xs) == 1:
        res = prog.run(np.asarray(xs[0], np.float32))
    else:
        res = prog.run({r["name"]: np.asarray(x, np.float32)
                        for r, x in zip(prog.input_records, xs)})
    return [np.ascontiguousarray(res[name], np.float32) for name in outputs]


def _register() -> None:
    """Declare the ``TcccNpuProgram<k>`` Python ops with onnxruntime-extensions (once)."""
    global _REGISTERED
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    with _LOCK:
        if _REGISTERED:
            return
        for k in range(1, MAX_OUTPUTS + 1):
            for m in range(1, MAX_INPUTS + 1):
                def body(xs, folder, outputs, _k=k):
                    ys = run_segment(folder, json.loads(outputs), *xs)
                    return ys[0] if _k == 1 else tuple(ys)

                onnx_op(op_type=op_type(k, m), inputs=[PyCustomOpDef.dt_float] * m,
                        outputs=[PyCustomOpDef.dt_float] * k,
                        attrs={"folder": PyCustomOpDef.dt_string,
                               "outputs": PyCustomOpDef.dt_string})(_kwargs_body(body))
        _REGISTERED = True


def _kwargs_body(body):
    """onnxruntime-extensions passes inputs positionally and attributes as keyword
    arguments."""
    def f(*xs, **attrs):
        return body(xs, attrs["folder"], attrs["outputs"])
    return f


def check_model(path) -> list[str]:
    """Load (and validate, as ``tccc run`` does) every compiled folder an exported model's NPU
    nodes reference, so a bad folder is reported before ONNX Runtime runs: an exception raised
    inside a Python custom op terminates the process (onnxruntime-extensions 0.15 lets it
    escape through C++), with the message on stderr but no Python traceback to catch.

    Returns:
        The folders, in node order.

    Raises:
        InputError, FormatError: the model cannot be read, or a folder is missing/invalid
            (the message names the file).
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises assorted errors on unreadable files
        raise InputError(f"{path}: cannot read the model ({exc})") from None
    folders = []
    for n in model.graph.node:
        if n.domain == DOMAIN and n.op_type.startswith("TcccNpuProgram"):
            attrs = {a.name: a.s.decode() for a in n.attribute}
            _program(attrs["folder"])
            folders.append(attrs["folder"])
    return folders


def session_options(model_path=None, options=None):
    """ONNX Runtime session options that run tccc's NPU segment nodes.

    Args:
        model_path: the exported model; when given, the folders it references are validated
            now (:func:`check_model`), so a bad folder raises here instead of aborting the
            process when the session runs.
        options: an ``onnxruntime.SessionOptions`` to extend (None: a new one).

    Returns:
        The options with onnxruntime-extensions' library registered (and tccc's ops declared).

    Raises:
        InputError: onnxruntime-extensions is not installed (``pip install tccc[ort]``);
            with ``model_path``, what :func:`check_model` raises.
    """
    if model_path is not None:
        check_model(model_path)
    try:
        import onnxruntime as ort
        from onnxruntime_extensions import get_library_path
    except ImportError:
        raise InputError("running tccc models inside ONNX Runtime needs onnxruntime-extensions "
                         "(pip install 'tccc[ort]')") from None
    _register()
    so = options if options is not None else ort.SessionOptions()
    so.register_custom_ops_library(get_library_path())
    return so
