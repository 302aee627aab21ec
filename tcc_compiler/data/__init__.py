"""Package data shipped with tccc: sample photos (``photos/calib``, ``photos/eval``) and their
licences (``photos/LICENSES.md``). Use :func:`tcc_compiler.datasets.bundled_photos` to find them.
"""
