"""Accuracy of a compiled model on a labelled dataset (``tccc eval``), float model side by side.

Datasets (:func:`find_samples`):

* **Class sub-folders** (ImageNet / torchvision ``ImageFolder`` style): ``FOLDER/<class>/<file>``;
  classes are the sub-folder names sorted, label = position in that order.
* **A labels file** (``--labels FILE``, UTF-8, with or without the byte-order mark spreadsheet
  programs write) with one sample per line: the first field is the file path relative to the
  images folder, the last field the integer class index; fields are separated by commas (CSV,
  double-quoted fields as the ``csv`` module reads them, e.g. a file name holding a comma) or
  whitespace (ImageNet ``val.txt`` style; a path holding spaces is read as everything before
  the label when its first word names no file). Blank lines, ``#`` comments and a header line
  (last field not an integer) are skipped. Samples are sorted by path.

Samples are image files (anything Pillow reads, preprocessed by the manifest's
:class:`~tcc_compiler.datasets.images.Preprocess`), ``.npy`` float32 arrays of one input
already preprocessed (``[1, C, H, W]``, or ``[1, H, W, C]`` for a model whose ONNX input is
NHWC; the pixel overrides do not apply to them) or **raw arrays** (``.bin``, ``.raw``,
``.rgb``, or any file when ``raw`` is given): exactly ``W*H*C`` uint8 pixels in ``HWC``
(pixel-interleaved, e.g. the CIFAR-10 files in ``../shared/data/cifar10-resnet8``) or ``CHW``
(planar) layout, RGB order, no resizing (W and H must equal the model's input). Pixel scaling of
both kinds is ``value = (pixel * scale - mean) / std`` with the manifest's values unless
overridden; ``pixels="raw"`` means scale 1, mean 0, std 1 (models fed 0..255, like ResNet-8).

Metrics: top-1 / top-5 accuracy (fraction of samples whose label is the highest / among the five
highest scores of the final graph output), for the NPU (reference executor) and, with a float
model, for ONNX Runtime on the same preprocessed input, plus ``flips``: samples whose top-1
differs between the two.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tcc_compiler.datasets.raw import RAW_SUFFIXES, RawSpec, is_raw_file, load_raw
from tcc_compiler.errors import InputError

log = logging.getLogger(__name__)

PIXEL_MODES = ("manifest", "raw")
TOPK = 5


@dataclass(frozen=True)
class Sample:
    """One labelled sample: file path, class index (>= 0) and, when it came from a labels file,
    ``where`` = ``"FILE:LINE"`` (named in errors)."""

    path: Path
    label: int
    where: str = ""


def _int_or_none(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None


def _fields(line: str, images: Path) -> list[str]:
    """The fields of one stripped, non-blank labels-file line (module docstring): CSV when it
    holds a comma, else whitespace-separated, with a path holding spaces kept whole."""
    if "," in line:
        return [p.strip() for p in next(csv.reader([line]))]
    parts = line.split()
    if len(parts) > 2 and not (images / parts[0]).is_file():
        head = line.rsplit(None, 1)[0]
        if (images / head).is_file():
            return [head, parts[-1]]
    return parts


def read_labels(path: Path, images: Path) -> list[Sample]:
    """Parse a labels file (format in the module docstring).

    Raises:
        InputError: unreadable file, a malformed line (named by line number), a negative label,
            a file that does not exist under ``images``, or no samples at all.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read labels file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: labels file is not UTF-8 text") from None
    out: list[Sample] = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = _fields(s, images)
        label = _int_or_none(parts[-1]) if len(parts) >= 2 else None
        if label is None:
            if not out and n == 1 and not (images / parts[0]).is_file():
                continue      # header line ("file,label"): its first field names no image
            raise InputError(f"{path}:{n}: expected 'file,...,label' with an integer class "
                             f"index as the label, got {s!r}")
        if label < 0:
            raise InputError(f"{path}:{n}: label {label} is negative")
        f = images / parts[0]
        if not f.is_file():
            raise InputError(f"{path}:{n}: {f} not found")
        out.append(Sample(f, label, f"{path}:{n}"))
    if not out:
        raise InputError(f"{path}: no samples (blank, comment or header lines only)")
    return sorted(out, key=lambda s: str(s.path))


def output_classes(manifest: dict) -> int | None:
    """Number of values (classes) of the model's first graph output, from the manifest's
    ``outputs`` shape; None when that output is not listed there (e.g. made by a host op)."""
    name = (manifest.get("graph_outputs") or [None])[0]
    for o in manifest.get("outputs", []):
        if isinstance(o, dict) and o.get("name") == name and o.get("shape"):
            n = 1
            for d in o["shape"]:
                n *= int(d)
            return n
    return None


def not_a_classifier(manifest: dict) -> str | None:
    """Why top-1/top-5 over the model's first graph output mean nothing: it is not one score
    per class (more than one of its ONNX dims above 1, e.g. a detector's [1, 84, 8400] or a
    feature map [1, C, H, W]); None when it is (or its shape is not listed). ``eval`` ranks
    the flattened output either way, so the user is told once.
    """
    name = (manifest.get("graph_outputs") or [None])[0]
    for o in manifest.get("outputs", []):
        if isinstance(o, dict) and o.get("name") == name and o.get("shape"):
            shape = [int(d) for d in o["shape"]]
            if sum(d > 1 for d in shape) > 1:
                n = int(np.prod(shape))
                return (f"output '{name}' has shape {shape}, not one score per class: top-1/"
                        f"top-5 rank its {n} flattened values, meaningless for a detector or "
                        "any non-classifier output")
            return None
    return None


def check_labels(samples: list[Sample], classes: int | None) -> None:
    """Refuse a label the model cannot output (counting it wrong would hide a bad file).

    Raises:
        InputError: a label >= ``classes``, naming its labels-file line (or its file).
    """
    if classes is None:
        return
    for s in samples:
        if s.label >= classes:
            raise InputError(f"{s.where or s.path}: label {s.label} is out of range: the model "
                             f"outputs {classes} classes (0..{classes - 1})")


def folder_classes_note(root: str | os.PathLike, folders: list[str] | None,
                        classes: int | None) -> str | None:
    """Why class sub-folder labels may be wrong for this model, or None.

    A sub-folder's label is its sorted position, so the labels are the model's class indices
    only when there is one folder per output class: a subset of ImageNet's synset folders
    (e.g. 12 of the 1000) would be labelled 0..11 and score near 0 % with no error.

    Args:
        root: the dataset folder (named in the message). folders: the sorted class
            sub-folder names (None: a labels file gave the labels). classes: the model's
            number of output classes (:func:`output_classes`; None: unknown).

    Returns:
        A one-line warning, or None when the counts agree or either is unknown.
    """
    if folders is None or classes is None or len(folders) == classes:
        return None
    return (f"{root}: {len(folders)} class sub-folders but the model outputs {classes} "
            f"classes: each sample's label is its folder's sorted position (0.."
            f"{len(folders) - 1}), not the class index of the folder's name; for a subset "
            "of the classes give --labels FILE")


def find_samples(images: str | os.PathLike, labels: str | os.PathLike | None = None,
                 every_file: bool = False) -> tuple[list[Sample], list[str] | None]:
    """The labelled samples of a dataset folder.

    A class sub-folder's samples are its images, ``.npy`` and raw files (the suffixes ``tccc
    run`` takes from a folder, raw ones always), or, with ``every_file`` (``--raw``), every
    file; others (``notes.txt``) are skipped with one warning. Hidden files are skipped.

    Returns:
        (samples, class names): class names are the sorted sub-folder names, or None when a
        labels file gives the labels.

    Raises:
        InputError: missing folder, no labels file and no class sub-folders, or no samples.
    """
    root = Path(images)
    if not root.exists():
        raise InputError(f"{root}: does not exist (--images wants a dataset folder)")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (--images wants a dataset folder)")
    if labels is not None:
        return read_labels(Path(labels), root), None
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"{root}: no class sub-folders; give --labels FILE for a flat folder")
    from tcc_compiler.datasets.images import IMAGE_SUFFIXES

    takes = IMAGE_SUFFIXES + (".npy",) + RAW_SUFFIXES
    out, skipped = [], []
    for i, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            if every_file or f.suffix.lower() in takes:
                out.append(Sample(f, i))
            else:
                skipped.append(f)
    if skipped:
        log.warning("%s: skipped %d file(s) in the class sub-folders that are not images, .npy "
                    "or raw files (%s%s); --raw reads every file as raw", root, len(skipped),
                    skipped[0], ", ..." if len(skipped) > 1 else "")
    if not out:
        raise InputError(f"{root}: the class sub-folders hold no files")
    return out, classes


def preprocess_for(manifest_pre: dict, pixels: str = "manifest", scale: float | None = None,
                   mean=None, std=None):
    """The :class:`Preprocess` to use: the manifest's, with the documented overrides.

    ``mean``/``std`` take 1 value (used for every channel) or one per channel (3 values for a
    greyscale model average to one), as ``tccc compile``'s flags do
    (:func:`~tcc_compiler.datasets.presets.user_values`). ``pixels`` "raw" takes 0..255 as
    they are (mean 0, std 1 for every channel).

    Raises:
        InputError: unknown ``pixels`` mode or an invalid override (e.g. 2 mean values).
    """
    from tcc_compiler.datasets.images import Preprocess
    from tcc_compiler.datasets.presets import user_values

    pre = Preprocess.from_dict(manifest_pre)
    if pixels not in PIXEL_MODES:
        raise InputError(f"--pixels {pixels}: choose from {', '.join(PIXEL_MODES)}")
    if pixels == "raw":
        pre = replace(pre, scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    kw = {}
    if scale is not None:
        kw["scale"] = float(scale)
    for name, value in (("mean", mean), ("std", std)):
        if value is not None:
            kw[name] = user_values(name, value, pre.channels)
    return replace(pre, **kw) if kw else pre


def load_sample(path: Path, pre, raw: RawSpec | None, channels: int | None = None
                ) -> np.ndarray:
    """One sample as float32 NCHW ``[1, C, H, W]`` (C = ``pre.channels``): an image, or a raw
    array (:func:`tcc_compiler.datasets.raw.load_raw`, the loader calibration uses too) of the
    model input's ``channels`` (default ``pre.channels``; any count, images 1 or 3).

    Raises:
        InputError: unreadable file, a raw file of the wrong size or without a raw layout, a
            raw size different from the model input, an image for a model input of other
            than 1 or 3 channels.
    """
    from tcc_compiler.datasets.images import load_image

    if raw.takes(path) if raw is not None else is_raw_file(path):
        return load_raw(path, pre, raw, channels)
    return load_image(path, pre)


def _topk(y: np.ndarray, k: int = TOPK) -> list[int]:
    y = np.asarray(y, np.float64).reshape(-1)
    return [int(i) for i in np.argsort(-y, kind="stable")[:k]]


_ort_cache: dict = {}


def _float_session(prog, model: str):
    """An ONNX Runtime session per (process, model), with the program's input layout."""
    key = (str(model), str(prog.folder))
    if key not in _ort_cache:
        from tcc_compiler.runtime.check import Checker

        _ort_cache[key] = Checker(prog, model)
    return _ort_cache[key]


def eval_job(prog, item) -> dict:
    """Worker job: load one sample, run the NPU (and the float model), return top-5 lists.

    ``item`` = (path, label, Preprocess, RawSpec | None, float model path | None).

    Raises:
        InputError: the loaded sample's NCHW shape differs from the model input (names the file).
    """
    path, label, pre, raw, model = item
    if Path(path).suffix.lower() == ".npy" and not (raw is not None and raw.force):
        x = prog.as_input(path)   # a preprocessed array, in the model's NCHW or NHWC layout
    else:
        x = load_sample(Path(path), pre, raw, int(prog.input_shape[1]))
    want = tuple(int(d) for d in prog.input_shape)
    if tuple(x.shape) != want:
        raise InputError(f"{path}: loads as {tuple(x.shape)} but the model input is {want}; "
                         "check the preprocessing (--pixels / the manifest's "
                         "width/height/channels)")
    # the float model runs on a worker thread beside the executor (runtime/check.py)
    pending = _float_session(prog, model).start(x, golden=False) if model else None
    try:
        res = prog.run(x)
    except BaseException:
        if pending is not None:
            pending.wait()
        raise
    out = {"label": label, "npu": _topk(prog.final_output(res))}
    if pending is not None:
        out["float"] = _topk(pending.floats.result()[0])
    return out


def summarize(rows: list[dict], total: int, interrupted: bool) -> dict:
    """Accuracy figures from per-sample rows (see :func:`eval_job`).

    Returns:
        {"samples", "total", "interrupted", "npu": {"top1", "top5", "top1_correct",
        "top5_correct"}, and with float rows "float" (same keys) and "flips"}; top1/top5 are
        fractions, None when no sample finished.
    """
    n = len(rows)

    def acc(key):  # no sample finished (interrupted at once): no accuracy, None (null)
        t1 = sum(r[key][0] == r["label"] for r in rows)
        t5 = sum(r["label"] in r[key][:TOPK] for r in rows)
        return {"top1": t1 / n if n else None, "top5": t5 / n if n else None,
                "top1_correct": t1, "top5_correct": t5}

    out = {"samples": n, "total": total, "interrupted": interrupted, "npu": acc("npu")}
    if rows and "float" in rows[0]:
        out["float"] = acc("float")
        out["flips"] = sum(r["npu"][0] != r["float"][0] for r in rows)
    return out


def evaluate(folder: str | os.PathLike, samples: list[Sample], pre, raw: RawSpec | None = None,
             model: str | None = None, jobs: int = 1, progress: bool = False,
             prog=None, ray: str | None = None) -> dict:
    """Run every sample, return :func:`summarize`'s dict (partial if interrupted by Ctrl-C).

    Args:
        folder: compiled output folder. samples: from :func:`find_samples` (already limited).
        pre: preprocessing (:func:`preprocess_for`). raw: raw-array layout or None.
        model: float ONNX model to compare with, or None. jobs: worker processes.
        progress: show a tqdm bar on stderr (done/total, rate, elapsed and the ETA).
        prog: an already loaded program (jobs == 1). ray: a Ray cluster address ("auto")
        to run the samples on instead (:func:`tcc_compiler.runtime.batch.imap`).

    Raises:
        InputError / FormatError / ExecutionError from loading or running a sample.
    """
    from tcc_compiler.runtime.batch import imap

    items = [(str(s.path), s.label, pre, raw, model) for s in samples]
    rows: list[dict] = []
    interrupted = False
    it = imap(folder, items, eval_job, jobs=jobs, prog=prog, ray=ray)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="img", dynamic_ncols=True, leave=False)
    try:
        for r in it:
            rows.append(r)
            if bar is not None:
                bar.update(1)
                if len(rows) % 10 == 0:
                    s = summarize(rows, len(items), False)
                    bar.set_postfix(top1=f"{100 * s['npu']['top1']:.1f}%")
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted after %d of %d samples", len(rows), len(items))
    finally:
        it.close()
        if bar is not None:
            bar.close()
    return summarize(rows, len(items), interrupted)
