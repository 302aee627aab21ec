"""The raw-input options ``tccc compile``, ``run`` and ``eval`` share: ``--raw-size WxHxC``,
``--raw-layout HWC|CHW``, eval's ``--raw`` and run/eval's ``--pixels manifest|raw`` (compile's
``--pixels`` is a preprocessing flag of its own). One declaration (the same help texts) and one
check (:func:`raw_options`) for all three: they read raw files through one loader
(:mod:`tcc_compiler.datasets.raw`), so they take and refuse the same options alike.

Not a command module (``cli/commands/`` holds only commands): :mod:`tcc_compiler.cli.main`
discovers every module there.
"""

from __future__ import annotations

import argparse

from tcc_compiler.datasets.raw import RAW_LAYOUTS, RawSpec
from tcc_compiler.errors import InputError
from tcc_compiler.options import DEFAULTS


def add_raw_arguments(p: argparse.ArgumentParser, files: str, *, force: bool = False,
                      pixels: bool = False) -> None:
    """Add ``--raw-size`` and ``--raw-layout`` (and ``--raw`` with ``force``, ``--pixels`` with
    ``pixels``) to parser ``p``. ``--raw-layout`` defaults to None, so :func:`raw_options`
    can tell it was given without ``--raw-size``.

    Args:
        files: what the raw files are, for the help ("input files", "sample files", ...).
    """
    p.add_argument("--raw-size", metavar="WxHxC", default=DEFAULTS.raw_size,
                   help=f"raw uint8 {files} (.bin/.raw/.rgb) of this size: the model input's "
                        "W x H x C (any C it takes), never resized, pixel values as the "
                        "preprocessing says; read alike by compile --calib, run and eval")
    p.add_argument("--raw-layout", default=None, choices=RAW_LAYOUTS,
                   help="their byte order: HWC = pixel-interleaved (e.g. CIFAR-10 files), CHW "
                        f"= planar (default {DEFAULTS.raw_layout}; needs --raw-size)")
    if force:
        p.add_argument("--raw", action="store_true",
                       help="treat every sample file as raw, whatever its suffix (needs "
                            "--raw-size)")
    if pixels:
        from tcc_compiler.api.folders import PIXEL_MODES

        p.add_argument("--pixels", default=PIXEL_MODES[0], choices=PIXEL_MODES,
                       help="manifest = the compiled preprocessing; raw = values 0..255 "
                            "(scale 1, mean 0, std 1)")


def raw_options(args: argparse.Namespace) -> tuple[str | None, str]:
    """``(raw size, raw layout)`` of parsed arguments, checked before any work: the size is
    parsed (:meth:`~tcc_compiler.datasets.raw.RawSpec.parse`), the layout defaults to
    ``DEFAULTS.raw_layout``.

    Raises:
        InputError: ``--raw-layout`` or ``--raw`` without ``--raw-size`` (they would read
            nothing: raw files need their size), a size not ``WxHxC``.
    """
    size, layout = args.raw_size, args.raw_layout
    if size is None and layout is not None:
        raise InputError(f"--raw-layout {layout} applies to raw files of a given size only; "
                         "add --raw-size WxHxC")
    layout = DEFAULTS.raw_layout if layout is None else layout
    RawSpec.parse(size, layout, getattr(args, "raw", False))
    return size, layout
