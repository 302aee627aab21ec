"""Python API on a compiled output folder: load it, feed it inputs, run, check, evaluate,
analyze, report and export it (what ``tccc run|eval|analyze|report|export-onnx`` do).

    >>> from tcc_compiler.api import folders
    >>> prog = folders.load_program("out/")
    >>> xs, labels = folders.labelled_inputs(["photos/"], prog)
    >>> results = list(folders.run_inputs(prog, xs))
    >>> ins = folders.input_stream(["photos/"], prog)   # decoded one at a time
    >>> for label, res in zip(ins.labels(), folders.run_inputs(prog, ins)): ...

Every function raises :class:`tcc_compiler.errors.TccError` subclasses with one-line messages
(InputError for bad paths or arguments, FormatError for a corrupt folder).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from tcc_compiler.binfmt.weightfile import name_hash
from tcc_compiler.datasets.images import (IMAGE_CHANNELS, LazyInputs, Preprocess,
                                          bundled_photos, load_inputs)
from tcc_compiler.datasets.raw import RAW_LAYOUTS
from tcc_compiler.emit.files import IR_FILE, MANIFEST_FILE
from tcc_compiler.errors import InputError
from tcc_compiler.runtime import LoadedProgram, load_program
from tcc_compiler.runtime.evaluate import PIXEL_MODES
from tcc_compiler.runtime.loaded import input_layout, read_report
from tcc_compiler.runtime.segmented import is_segmented_folder

log = logging.getLogger(__name__)

__all__ = ["PIXEL_MODES", "RAW_LAYOUTS", "LoadedProgram", "analyze_folder",
           "check_analysis_inputs", "checker", "evaluate_folder", "export_onnx", "input_stream",
           "inputs_for", "labelled_inputs", "load_program", "name_hash", "read_report",
           "run_inputs", "write_html_report"]


def inputs_for(paths: Sequence[str | os.PathLike], prog: LoadedProgram, *,
               raw_size: str | tuple[int, int, int] | None = None, raw_layout: str = "HWC",
               pixels: str = "manifest") -> list[np.ndarray]:
    """Float32 NCHW inputs for ``prog`` from images (preprocessed as its manifest says),
    ``.npy`` arrays, raw uint8 files and folders of them
    (:func:`tcc_compiler.datasets.images.load_inputs`).

    Args:
        raw_size: "WxHxC" of raw uint8 sample files (.bin/.raw/.rgb, never resized: the
            model input's size), ``raw_layout`` "HWC" or "CHW"
            (:meth:`tcc_compiler.datasets.raw.RawSpec.parse`, as ``tccc eval`` and
            ``tccc compile --calib`` read them).
        pixels: "manifest" (the compiled preprocessing) or "raw" (pixel values 0..255:
            scale 1, mean 0, std 1), for images and raw files alike.

    Raises:
        InputError: a missing or unreadable file, a wrong shape, a bad ``raw_size`` or one
            other than the model input's, a raw file of the wrong byte count or without
            ``raw_size``.
    """
    pre, raw = _input_reading(prog, raw_size, raw_layout, pixels)
    return load_inputs(paths, pre, prog.input_shape, input_layout(prog.manifest), raw)


def _input_reading(prog: LoadedProgram, raw_size, raw_layout: str, pixels: str):
    """(Preprocess, RawSpec | None) for reading ``prog``'s inputs with these options."""
    from tcc_compiler.datasets.raw import RawSpec
    from tcc_compiler.runtime.evaluate import preprocess_for

    raw = RawSpec.parse(raw_size, raw_layout)
    return preprocess_for(prog.manifest["preprocess"], pixels), raw


def labelled_inputs(paths: Sequence[str | os.PathLike], prog: LoadedProgram, *,
                    raw_size: str | tuple[int, int, int] | None = None,
                    raw_layout: str = "HWC", pixels: str = "manifest"
                    ) -> tuple[list[np.ndarray], list[str]]:
    """Inputs as :func:`inputs_for` loads them (the same options), each with a label naming
    its file, all in memory (:func:`input_stream` decodes one at a time).

    A folder contributes one label per file in it (``folder/name.jpg``; raw files too with
    ``raw_size``); a ``.npy`` file with N > 1 arrays contributes ``file.npy[i]``.

    Raises:
        InputError: as :func:`inputs_for`.
    """
    ins = input_stream(paths, prog, raw_size=raw_size, raw_layout=raw_layout, pixels=pixels)
    return list(ins), ins.labels()


def input_stream(paths: Sequence[str | os.PathLike], prog: LoadedProgram, *,
                 raw_size: str | tuple[int, int, int] | None = None,
                 raw_layout: str = "HWC", pixels: str = "manifest") -> LazyInputs:
    """The inputs of :func:`labelled_inputs` (the same options, order and labels) as a
    sequence that decodes each image or raw file when it is read
    (:class:`tcc_compiler.datasets.images.LazyInputs`: ``len``, ``[i]`` a float32 NCHW
    ``[1, C, H, W]`` array, ``.labels()``), so a loop over thousands of photos holds one.

    Raises:
        InputError: on the call, a missing path, an empty folder, a ``.npy`` array or raw
            file of the wrong shape or size, a preprocessing unlike the model input (as
            :func:`inputs_for`); on reading input ``i``, an undecodable image or a ``.npy``
            array holding NaN/Inf (naming it: ``FILE.npy[j]`` for array ``j`` of several).
    """
    from tcc_compiler.fsutil import check_path

    for given in paths:
        check_path(given)  # a symlink loop or too long a name: one line, not a traceback
    pre, raw = _input_reading(prog, raw_size, raw_layout, pixels)
    return LazyInputs(paths, pre, prog.input_shape, input_layout(prog.manifest), raw,
                      stream_npy=True)


def _run_job(prog, item) -> dict:
    """Batch job (module level so worker processes can pickle it): run one float input."""
    from tcc_compiler.runtime.batch import run_input

    x, schedule, seed = item
    return run_input(prog, x, schedule, seed)


def run_inputs(prog: LoadedProgram, xs: Sequence[np.ndarray], schedule: str = "inorder",
               seed: int = 0, jobs: int = 1,
               folder: str | os.PathLike | None = None) -> Iterator[dict]:
    """Run every input on the reference executor, in order, with ``jobs`` worker processes.

    Args:
        prog: the loaded program (``folder``, default ``prog.folder``, is reloaded in each
            worker process).
        xs: float32 inputs shaped like ``prog.input_shape`` (NCHW), preprocessed; a lazy
            sequence (:func:`input_stream`) is read one input at a time as each is run (with
            worker processes, a few ahead: :data:`tcc_compiler.runtime.batch
            .IN_FLIGHT_PER_WORKER` per worker); an input that cannot be read is raised in its
            turn, after the results of those before it.
        schedule: "inorder" (stream order) or "random" (a legal interleaving of the three
            queues, hazard-checked, seeded by ``seed``).

    Yields:
        Per input, the executor's outputs by name (as :meth:`LoadedProgram.run`).

    Raises:
        InputError: jobs < 1, a wrong shape or non-finite values. ExecutionError: an
        executor fault.
    """
    from tcc_compiler.runtime.batch import imap

    items = ((x, schedule, seed) for x in xs)
    yield from imap(prog.folder if folder is None else folder, items, _run_job, jobs, prog=prog,
                    count=len(xs))


def checker(prog: LoadedProgram, model: str | os.PathLike):
    """A :class:`tcc_compiler.runtime.check.Checker` of ``prog`` against the float ONNX
    ``model`` (``.check(x, outputs)``: bit_exact vs the golden integer model, sqnr_db and
    top1_agree vs ONNX Runtime).

    Raises:
        InputError: the model cannot be read or does not match the program's input.
    """
    from tcc_compiler.runtime.check import Checker

    return Checker(prog, model)


def evaluate_folder(folder: str | os.PathLike, images: str | os.PathLike,
                    labels: str | os.PathLike | None = None, *,
                    check: str | os.PathLike | None = None, limit: int | None = None,
                    jobs: int = 1, raw_size: str | None = None, raw_layout: str = "HWC",
                    raw: bool = False, pixels: str = "manifest", scale: float | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    progress: bool = False, ray: str | None = None) -> dict:
    """Top-1 / top-5 of a compiled folder on a labelled dataset (``tccc eval``), the float
    model ``check`` side by side (:func:`tcc_compiler.runtime.evaluate.evaluate`).

    Args:
        images: class sub-folders, or the files ``labels`` lists ('file,...,label' CSV or
            'file label' lines). limit: evaluate the first N samples (N >= 1).
        raw_size: "WxHxC" of raw uint8 sample files (.bin/.raw/.rgb; ``raw``: every file),
            ``raw_layout`` "HWC" or "CHW". pixels: "manifest" (the compiled preprocessing) or
            "raw" (0..255); scale/mean/std override it.
        jobs: worker processes (capped at the samples and the usable CPUs). ray: run on the
            Ray cluster at this address ("auto": the running one, else a new local one;
            needs the ``tccc[ray]`` extra) with the same per-sample job and the same result;
            the samples' paths must be readable on every node. progress: a tqdm bar with
            the ETA on stderr.

    Returns:
        The result dict (``samples``, ``npu`` and maybe ``float`` top-k counts, ``flips``,
        ``interrupted``, ``classes`` for class sub-folders).

    Raises:
        InputError: bad arguments, labels outside the model's classes, unreadable samples,
            ``ray`` without Ray installed or no cluster at its address.
    """
    from tcc_compiler.runtime.evaluate import (RawSpec, check_labels, evaluate, find_samples,
                                               folder_classes_note, not_a_classifier,
                                               output_classes, preprocess_for)

    if ray is not None:
        from tcc_compiler.runtime.ray_batch import import_ray

        import_ray()   # refuse before any work
    prog = load_program(folder)
    samples, classes = find_samples(images, labels, every_file=raw)
    check_labels(samples, output_classes(prog.manifest))
    note = folder_classes_note(images, classes, output_classes(prog.manifest))
    if note is not None:
        log.warning("%s", note)
    why = not_a_classifier(prog.manifest)
    if why is not None:
        log.warning("%s: %s", folder, why)
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit {limit}: must be >= 1")
        samples = samples[:limit]
    spec = RawSpec.parse(raw_size or None, raw_layout, raw)
    pre = preprocess_for(prog.manifest["preprocess"], pixels, scale, mean, std)
    res = evaluate(folder, samples, pre, spec, check, jobs, progress=progress, prog=prog,
                   ray=ray)
    if classes is not None:
        res["classes"] = len(classes)
    return res


def check_analysis_inputs(folder: str | os.PathLike, model: str | os.PathLike) -> None:
    """Refuse up front what :func:`analyze_folder` cannot use.

    Raises:
        InputError: ``folder`` lacks manifest.json, or quantized.tir (a segmented folder:
            any NPU segment's); ``model`` is missing.
    """
    folder = Path(folder)
    if not (folder / MANIFEST_FILE).is_file():
        raise InputError(f"{folder / MANIFEST_FILE}: missing; is {folder} a tccc compile "
                         "output folder?")
    manifest = _read_manifest(folder)
    subs = ([str(s.get("folder")) for s in manifest.get("segments", ())
             if isinstance(s, dict) and s.get("device") == "npu"]
            if is_segmented_folder(manifest) else ["."])
    for sub in subs:
        p = folder / sub / IR_FILE
        if not p.is_file():
            raise InputError(f"{p}: missing; is {folder} a tccc compile output folder?")
    if not Path(model).is_file():
        raise InputError(f"{model}: no such file")


def _read_manifest(folder: Path) -> dict:
    """The parsed manifest.json of ``folder``.

    Raises:
        InputError: unreadable or not JSON.
    """
    try:
        return json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder / MANIFEST_FILE}: not readable JSON ({exc})") from None


def analyze_folder(folder: str | os.PathLike, model: str | os.PathLike,
                   inputs: Sequence[str | os.PathLike], progress: Callable | None = None
                   ) -> tuple[list, int]:
    """Per-layer INT8 error of a compiled folder against its float ONNX ``model``
    (:func:`tcc_compiler.quant.analyze.analyze`: accumulated and isolated, worst first).

    The float graph is the driver's import + float-pass stages at the folder's input size.
    A segmented folder is analyzed NPU segment by NPU segment, each fed the values its
    inputs take in the float model (:func:`tcc_compiler.segmenting.analyze
    .analyze_segmented`); each row names its segment.

    Returns:
        (rows, number of inputs): :class:`tcc_compiler.quant.analyze.LayerReport` rows,
        worst isolated SQNR first.

    Raises:
        InputError: not a compile output folder (:func:`check_analysis_inputs`), a ``model``
            other than the one compiled (sha256,
            :func:`~tcc_compiler.runtime.check.refuse_other_model`), unreadable
            inputs.
    """
    from tcc_compiler import driver
    from tcc_compiler.ir.text import load_ir
    from tcc_compiler.quant.analyze import analyze
    from tcc_compiler.runtime.check import refuse_other_model

    check_analysis_inputs(folder, model)
    folder = Path(folder)
    manifest = _read_manifest(folder)
    refuse_other_model(model, manifest, "tccc analyze")
    shape = tuple(manifest["input"]["shape"])
    xs = load_inputs(inputs, Preprocess.from_dict(manifest["preprocess"]), shape,
                     input_layout(manifest))
    if is_segmented_folder(manifest):
        from tcc_compiler.segmenting.analyze import analyze_segmented

        return analyze_segmented(folder, model, manifest, xs, progress), len(xs)
    h, w, c = manifest["input"]["npu_hwc"]
    qgraph = load_ir(folder / IR_FILE)
    fgraph = driver.run_float_passes(*driver.import_model(model, (w, h, c))).graph
    return analyze(fgraph, qgraph, xs, progress=progress), len(xs)


def write_html_report(folder: str | os.PathLike, output: str | os.PathLike,
                      histogram_inputs: Sequence[str | os.PathLike] | None = None,
                      progress: Callable | None = None) -> Path:
    """Write the self-contained HTML report of a compiled folder (``tccc report``).

    Args:
        histogram_inputs: None = no activation histograms; [] = 4 bundled photos; else
            images/.npy arrays run through the golden integer model for the histograms.
        progress: optional iterable wrapper around the histogram inputs.

    Returns:
        The written file's path.

    Raises:
        InputError: unreadable folder or inputs; bundled photos for a model taking other than
            1 or 3 channels; histograms of a program with several inputs (an NPU segment).
    """
    from tcc_compiler.report import write_html
    from tcc_compiler.report.html import activation_histograms

    hist = None
    if histogram_inputs is not None:
        from tcc_compiler.runtime.segmented import refuse_segmented

        refuse_segmented(folder, "tccc report --histograms")
        prog = load_program(folder)
        names = [r["name"] for r in prog.input_records]
        if len(names) > 1:   # one array per run cannot feed it (was: a hint to pass .npy)
            raise InputError(f"{folder}: this NPU program takes {len(names)} inputs "
                             f"({', '.join(names)}; a segment of a bigger model): --histograms "
                             "runs programs with one input; drop --histograms for this folder")
        c = int(prog.input_shape[1])
        if not histogram_inputs and c not in IMAGE_CHANNELS:
            raise InputError(f"{folder}: the model takes {c} channels; the bundled photos "
                             "(used when --histograms names no inputs) load as 1 or 3 channels "
                             "- pass .npy arrays: --histograms a.npy ...")
        xs = inputs_for(histogram_inputs or bundled_photos("calib")[:4], prog)
        # the wrapper advances as each input is run (a list() here filled the bar first)
        hist = activation_histograms(folder, (progress or (lambda it: it))(xs))
    return write_html(folder, output, hist)


def export_onnx(folder: str | os.PathLike, output: str | os.PathLike,
                ort_nodes: bool = False) -> Path:
    """Write a compiled folder as a standard QDQ ONNX model
    (:func:`tcc_compiler.export.save_qdq`; the mapping is documented in export/qdq.py), or
    with ``ort_nodes`` as a model whose NPU segments are custom nodes running the compiled
    program inside ONNX Runtime (:func:`tcc_compiler.export.ort_model.save_ort`; run it with
    ``onnxruntime.InferenceSession(path, tcc_compiler.runtime.ort_ops.session_options())``).

    Returns:
        The written file's path.

    Raises:
        InputError: the QDQ form of a segmented folder (NPU and host segments): it maps one
            NPU program (the message names the ``npu_<k>`` folders); the ``ort_nodes`` form
            takes segmented folders.
    """
    if ort_nodes:
        from tcc_compiler.export.ort_model import save_ort

        return save_ort(folder, output)
    from tcc_compiler.export import save_qdq
    from tcc_compiler.runtime.segmented import refuse_segmented

    refuse_segmented(folder, "tccc export-onnx")
    return save_qdq(folder, output)
