"""Host runtime: load a compiled output folder and run it on the reference executor."""

from tcc_compiler.runtime.loaded import LoadedProgram, load_program  # noqa: F401
