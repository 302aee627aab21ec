"""Input data for calibration and evaluation: image files, folders, ``.npy`` arrays, bundled photos.

See :mod:`tcc_compiler.datasets.images` and, for the preprocessing users configure (presets,
per-field settings), :mod:`tcc_compiler.datasets.presets`.
"""

from tcc_compiler.datasets.images import Preprocess, bundled_photos, load_image, load_inputs
from tcc_compiler.datasets.presets import PRESETS, PreprocessSettings, preset

__all__ = ["PRESETS", "Preprocess", "PreprocessSettings", "bundled_photos", "load_image",
           "load_inputs", "preset"]
