"""``tccc run --check``: simulator vs golden integer model vs float model (ONNX Runtime).

* ``bit_exact``: every byte of every NPU output of the reference executor equals the golden
  integer model computed from the quantized IR saved with the binaries.
* ``sqnr_db``: 10 log10(sum f^2 / sum (f - q)^2) of the dequantized final output q against
  ONNX Runtime's float output f.
* ``top1_agree``: argmax of both final outputs agree.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.runtime.loaded import LoadedProgram

IR_FILE = "quantized.tir"


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; +inf when identical, -inf for a zero signal."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    err = ref - np.asarray(test, np.float64).reshape(-1)
    s, n = float((ref ** 2).sum()), float((err ** 2).sum())
    if n == 0.0:
        return float("inf")
    if s == 0.0:
        return float("-inf")
    return 10.0 * np.log10(s / n)


class Checker:
    """Holds the golden graph and the ONNX Runtime session for repeated checks.

    Args:
        prog: the loaded program. model: path to the float ONNX model.

    Raises:
        InputError: the model cannot be loaded by ONNX Runtime or the IR file is missing.
    """

    def __init__(self, prog: LoadedProgram, model: str | os.PathLike):
        import onnxruntime as ort

        from tcc_compiler.ir.text import load_ir

        self.prog = prog
        self.graph = load_ir(Path(prog.folder) / IR_FILE)
        if not Path(model).is_file():
            raise InputError(f"{model}: no such file (--check needs the float ONNX model)")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            raise InputError(f"{model}: ONNX Runtime cannot load it "
                             f"({str(exc).splitlines()[0][:200]})") from None
        self.in_name = self.sess.get_inputs()[0].name

    def float_output(self, x: np.ndarray) -> np.ndarray:
        """ONNX Runtime's first output for float NCHW input ``x``."""
        feed = x
        if self.prog.manifest["input"].get("onnx_layout") == "NHWC":
            feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return self.sess.run(None, {self.in_name: feed})[0]

    def check(self, x: np.ndarray, res: dict[str, np.ndarray]) -> dict:
        """Compare one simulator result ``res`` (from LoadedProgram.run) for input ``x``."""
        from tcc_compiler.quant.golden import run_golden

        gold = run_golden(self.graph, x)
        exact = True
        for o in self.prog.manifest["outputs"]:
            g = gold.get("int:" + o["name"])
            s = res["int:" + o["name"]]
            if g is None or g.reshape(-1).tobytes() != s.reshape(-1).tobytes():
                exact = False
        f = self.float_output(x)
        q = self.prog.final_output(res)
        return {"bit_exact": exact, "sqnr_db": round(sqnr_db(f, q), 3),
                "top1_agree": bool(int(np.argmax(f)) == int(np.argmax(q)))}
