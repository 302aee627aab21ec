"""Input data for calibration and evaluation: image files, folders, ``.npy`` arrays, bundled photos.

See :mod:`tcc_compiler.datasets.images`.
"""

from tcc_compiler.datasets.images import Preprocess, bundled_photos, load_image, load_inputs

__all__ = ["Preprocess", "bundled_photos", "load_image", "load_inputs"]
