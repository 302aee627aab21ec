"""Regenerate the photos shipped in ``tcc_compiler/data/photos`` (developer tool, not runtime).

The photos come from scikit-image's bundled sample data; only images whose scikit-image docstring
states public domain or CC0 are used (see ``tcc_compiler/data/photos/LICENSES.md``, which this
script also writes). Each photo is cropped (box in source pixels), resized so its short side is
256 px (Pillow bicubic), converted to RGB and saved as a baseline JPEG at quality 90 without
metadata.

Usage::

    python tools/make_photos.py [--out tcc_compiler/data/photos]

Needs ``scikit-image`` (dev only) and Pillow.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SHORT_SIDE_PX = 256
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Source:
    """A scikit-image sample and its licence as stated in ``skimage/data/_fetchers.py``."""

    loader: str  # name of the skimage.data function
    title: str
    author: str
    licence: str


SOURCES = {
    "astronaut": Source("astronaut", "Eileen Collins (NASA Great Images, flic.kr/p/r9qvLn)",
                        "NASA", "Public domain"),
    "chelsea": Source("chelsea", "Chelsea the cat", "Stefan van der Walt", "CC0"),
    "coffee": Source("coffee", "Coffee cup (courtesy of Pikolo Espresso Bar)",
                     "Rachel Michetti", "CC0"),
    "rocket": Source("rocket", "Launch of DSCOVR on Falcon 9", "SpaceX",
                     "Public domain (released by SpaceX, 2015)"),
    "hubble": Source("hubble_deep_field", "Hubble eXtreme Deep Field", "NASA",
                     "Public domain (NASA media guidelines)"),
    "retina": Source("retina", "Fundus photograph of a normal left eye (Wikimedia Commons)",
                     "Mikael Häggström", "CC0 1.0"),
    "camera": Source("camera", "Camera man (greyscale)", "Lav Varshney", "CC0"),
    "clock": Source("clock", "Motion-blurred wall clock (greyscale)", "Stefan van der Walt",
                    "Public domain"),
    "brick": Source("brick", "Brick wall (CC0Textures Bricks25, greyscale)", "CC0Textures",
                    "CC0"),
    "grass": Source("grass", "Grass (DeviantArt linolafett Grass-01, greyscale)", "linolafett",
                    "CC0"),
    "gravel": Source("gravel", "Gravel (CC0Textures Gravel04, greyscale)", "CC0Textures", "CC0"),
}

# (kind, file stem, source key, crop box (left, top, right, bottom) in source pixels or None)
PHOTOS = [
    ("calib", "astronaut_face", "astronaut", (128, 0, 384, 256)),
    ("calib", "astronaut_full", "astronaut", None),
    ("calib", "chelsea_full", "chelsea", None),
    ("calib", "chelsea_face", "chelsea", (130, 20, 330, 220)),
    ("calib", "coffee_full", "coffee", None),
    ("calib", "coffee_cup", "coffee", (120, 20, 480, 380)),
    ("calib", "rocket_full", "rocket", None),
    ("calib", "rocket_launch", "rocket", (200, 60, 520, 380)),
    ("eval", "hubble_a", "hubble", (0, 0, 512, 512)),
    ("eval", "hubble_b", "hubble", (488, 360, 1000, 872)),
    ("eval", "hubble_c", "hubble", (300, 200, 556, 456)),
    ("eval", "retina_full", "retina", None),
    ("eval", "retina_disc", "retina", (40, 440, 480, 880)),
    ("eval", "camera_full", "camera", None),
    ("eval", "camera_man", "camera", (150, 40, 406, 296)),
    ("eval", "clock_full", "clock", None),
    ("eval", "clock_face", "clock", (120, 50, 320, 250)),
    ("eval", "brick", "brick", None),
    ("eval", "grass", "grass", None),
    ("eval", "gravel", "gravel", None),
]


def _load(loader: str) -> np.ndarray:
    import skimage.data  # dev-only dependency

    image = getattr(skimage.data, loader)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)


def _resize_short_side(image: Image.Image, short_px: int) -> Image.Image:
    w, h = image.size
    if w <= h:
        size = (short_px, max(short_px, round(h * short_px / w)))
    else:
        size = (max(short_px, round(w * short_px / h)), short_px)
    return image.resize(size, Image.Resampling.BICUBIC)


def main(argv: list[str] | None = None) -> int:
    """Write every photo and LICENSES.md into ``--out``; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--out", type=Path, default=root / "tcc_compiler" / "data" / "photos")
    args = parser.parse_args(argv)

    rows = []
    total_bytes = 0
    cache: dict[str, np.ndarray] = {}
    for kind, stem, key, box in PHOTOS:
        src = SOURCES[key]
        if key not in cache:
            cache[key] = _load(src.loader)
        pixels = cache[key]
        image = Image.fromarray(pixels, "RGB")
        if box is not None:
            image = image.crop(box)
        image = _resize_short_side(image, SHORT_SIDE_PX)
        folder = args.out / kind
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.jpg"
        image.save(path, "JPEG", quality=JPEG_QUALITY, optimize=True)
        total_bytes += path.stat().st_size
        grey = bool(np.all(pixels[..., 0] == pixels[..., 1]))
        what = "full frame" if box is None else f"crop box (left, top, right, bottom) = {box}"
        if grey:
            what += ", greyscale replicated to RGB"
        what += f", resized to {image.size[0]}x{image.size[1]} px (bicubic), JPEG quality 90"
        rows.append(f"| {kind}/{stem}.jpg | skimage.data.{src.loader}() — {src.title} "
                    f"| {src.author} | {src.licence} | {what} |")

    licences = [
        "# Licences of the bundled photos",
        "",
        "All photos are derived from the sample images bundled with scikit-image 0.26",
        "(`skimage/data`); the author and licence columns restate the docstrings in",
        "`skimage/data/_fetchers.py`. Only public-domain and CC0 images are used; images whose",
        "docstring states no licence or only \"no known copyright restrictions\" (moon, coins,",
        "immunohistochemistry, stereo motorcycle, page, logo) were left out on purpose.",
        "Regenerate with `python tools/make_photos.py` (needs scikit-image).",
        "",
        "`calib/` is for quantization calibration and `eval/` for accuracy checks; no eval photo",
        "is a crop of a calib source image.",
        "",
        "| file | source | author | licence | what was done |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    (args.out / "LICENSES.md").write_text("\n".join(licences), encoding="utf-8")
    sys.stderr.write(f"wrote {len(rows)} photos, {total_bytes} bytes\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
