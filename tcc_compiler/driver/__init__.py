"""The compiler driver: the one pipeline, its stages listed once.

    import_model -> run_float_passes -> calibrate -> quantize -> lower_program -> emit

Each stage is a function; :func:`compile_model` calls them in that order with one
:class:`~tcc_compiler.options.CompileOptions`. ``tccc ir print``, ``tccc analyze``,
:func:`tcc_compiler.placement.partition` and the test fixtures call the same stage functions
for the part of the pipeline they need, so the pipeline is assembled here only.
:mod:`tcc_compiler.api` wraps :func:`compile_model` for users; :mod:`tcc_compiler.emit` builds
the manifest and report and writes the output folder.

Modules: ``pipeline`` (:func:`compile_model` and the import, float-pass, lower and emit
stages), ``quantizing`` (the calibrate and quantize stages), ``records`` (the records the
stages hand on), ``resume`` (resuming from a ``.tir`` dump), ``memory`` (the up-front memory
check), ``logs`` (the ``-v`` stage lines). The names below are the driver's public API.
"""

from tcc_compiler.driver.memory import (address_space_limit_bytes, available_memory_bytes,
                                        check_memory)
from tcc_compiler.driver.pipeline import (check_cores, compile_model, emit, import_model,
                                          is_ir_file, lower_program, run_float_passes)
from tcc_compiler.driver.quantizing import calibrate, preprocess_for, quantize
from tcc_compiler.driver.records import Calibration, CompiledArtifacts, FloatGraph, Instrument
from tcc_compiler.driver.resume import load_resume_point

__all__ = [
    "Calibration", "CompiledArtifacts", "FloatGraph", "Instrument", "address_space_limit_bytes",
    "available_memory_bytes", "calibrate", "check_cores", "check_memory", "compile_model",
    "emit", "import_model", "is_ir_file", "load_resume_point", "lower_program", "preprocess_for",
    "quantize", "run_float_passes",
]
