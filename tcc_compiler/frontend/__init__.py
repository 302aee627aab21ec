"""Frontend: ONNX model -> graph IR (see :func:`import_onnx`)."""

from tcc_compiler.frontend.onnx_import import import_onnx, load_onnx, parse_input_spec  # noqa: F401
