"""``tccc run`` over many inputs streams them: each photo is decoded in its turn, so the
decoded inputs held at once stay a few however many there are (1000 ImageNet photos used to
be decoded before the first output: 915 MiB), in this process and with worker processes,
and the results are those of one-by-one runs. A photo that cannot be read stops the run in
its turn: the results before it stay printed whole, the error is one line naming it."""

from __future__ import annotations

import json
import weakref

import numpy as np
import pytest
from helpers.cli import one_line_error, run_cli

from tcc_compiler.datasets import images
from tcc_compiler.runtime.batch import IN_FLIGHT_PER_WORKER

#: Photos of the streamed runs.
N_PHOTOS = 24


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of :data:`N_PHOTOS` random 20x20 RGB PNG photos (resized to the model's
    16x16 on loading), sorted by name as ``tccc run`` reads them."""
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    r = np.random.default_rng(3)
    for k in range(N_PHOTOS):
        Image.fromarray(r.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(d / f"p{k:02d}.png")
    return d


def _count_decoded(monkeypatch) -> dict:
    """Count the decoded photos alive at once: the loader's ``load_image`` wrapped so each
    array it returns is counted until freed; returns {"live", "peak", "made"}."""
    real, seen = images.load_image, {"live": 0, "peak": 0, "made": 0}

    def freed():
        seen["live"] -= 1

    def counted(*a, **k):
        x = real(*a, **k)
        seen["live"] += 1
        seen["made"] += 1
        seen["peak"] = max(seen["peak"], seen["live"])
        weakref.finalize(x, freed)
        return x
    monkeypatch.setattr(images, "load_image", counted)
    return seen


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_holds_a_few_decoded_inputs_and_gives_one_by_one_results(small_folder, photos,
                                                                      monkeypatch, capsys, jobs):
    _, out = small_folder
    files = sorted(photos.iterdir())
    alone = []
    for f in files:
        code, stdout, err = run_cli(["run", out, f, "--json", "--logits", "--topk", "3"], capsys)
        assert code == 0, err
        alone.append(json.loads(stdout))
    seen = _count_decoded(monkeypatch)
    code, stdout, err = run_cli(["run", out, photos, "--json", "--logits", "--topk", "3",
                                 "--jobs", jobs], capsys)
    assert code == 0, err
    assert json.loads(stdout)["results"] == alone
    assert seen["made"] == N_PHOTOS   # each photo decoded once, in this process
    # one in this process (and the one before, until the next is decoded); with workers a
    # window of IN_FLIGHT_PER_WORKER per worker plus the one being received (measured: 2 and 5)
    assert seen["peak"] <= (2 if jobs == 1 else jobs * IN_FLIGHT_PER_WORKER + 1), seen
    # text: the same results, each input's lines with its prefix
    code, stdout, err = run_cli(["run", out, photos, "--topk", "3"], capsys)
    assert code == 0, err
    want = [f"[{i}] {r['input']}: top1: {r['top1']}  top3: {r['topk']}"
            for i, r in enumerate(alone)]
    assert stdout.splitlines() == want


@pytest.mark.parametrize("jobs", [1, 2])
def test_unreadable_photo_stops_in_its_turn(small_folder, photos, tmp_path, capsys, jobs):
    """Photo 5 of 8 is not an image: the four before it are printed whole (text), the error
    is one line naming it (exit 2) and nothing of it or after it is printed; ``--json``
    prints nothing."""
    _, out = small_folder
    d = tmp_path / "some"
    d.mkdir()
    files = sorted(photos.iterdir())[:8]
    for f in files:
        (d / f.name).write_bytes(f.read_bytes())
    bad = d / files[4].name
    bad.write_bytes(b"not a png")
    code, stdout, err = run_cli(["run", out, d, "--jobs", jobs], capsys)
    assert code == 2
    assert str(bad) in one_line_error(err)
    lines = stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines] == [f"[{i}] {d / f.name}"
                                                  for i, f in enumerate(files[:4])]
    code, stdout, err = run_cli(["run", out, d, "--json", "--jobs", jobs], capsys)
    assert code == 2 and stdout == "" and str(bad) in one_line_error(err)


def test_a_text_result_is_one_write(monkeypatch):
    """Each input's text result (its top1, check and per-output lines) reaches stdout in one
    write, so a Ctrl-C between two of its lines cannot leave half of it printed (before:
    one ``print`` per line; interrupted ``--jobs 2 --check`` runs ended on a ``top1`` line
    without its ``check`` line)."""
    import io
    import sys

    from tcc_compiler.cli.commands import run as run_cmd

    writes: list[str] = []

    class Recorder(io.StringIO):
        def write(self, s):
            writes.append(s)
            return len(s)

    monkeypatch.setattr(sys, "stdout", Recorder())
    out = {"top1": 3, "topk": [3, 1], "check": {"bit_exact": True, "sqnr_db": 31.5,
                                                "top1_agree": True,
                                                "sqnr_db_outputs": {"a": 30.0, "b": None}}}
    run_cmd._print_text(out, "[2] x.png: ")
    assert len(writes) == 1, writes
    assert writes[0] == ("[2] x.png: top1: 3  top2: [3, 1]\n"
                         "[2] x.png: check: bit_exact=true sqnr_db=31.50 top1_agree=true\n"
                         "[2] x.png:   output a: sqnr_db=30.00\n"
                         "[2] x.png:   output b: sqnr_db=n/a\n")


@pytest.mark.parametrize("check", [False, True])
def test_a_npy_array_with_nan_stops_in_its_turn(small_folder, tmp_path, capsys, check):
    """A ``.npy`` file of 6 inputs whose array 3 holds a NaN: arrays 0-2 are run and printed
    whole, then one error line naming ``FILE.npy[3]`` (exit 2); ``--json`` prints nothing.
    Before, the whole file was copied and every value checked before the first output: the
    run stopped on its set-up, nothing printed."""
    model, out = small_folder
    r = np.random.default_rng(5)
    xs = r.uniform(-1, 1, (6, 3, 16, 16)).astype(np.float32)
    xs[3, 1, 2, 3] = np.nan
    path = tmp_path / "six.npy"
    np.save(path, xs)
    extra = ["--check", model] if check else []
    code, stdout, err = run_cli(["run", out, path, *extra], capsys)
    assert code == 2, err
    line = one_line_error(err)
    assert f"{path}[3]" in line and "1 NaN/Inf" in line
    assert [ln.split(":")[0] for ln in stdout.splitlines() if ": top1: " in ln] == \
        [f"[{i}] {path}[{i}]" for i in range(3)]
    if check:   # each printed input's check line too
        assert sum(": check: bit_exact=true" in ln for ln in stdout.splitlines()) == 3
    code, stdout, err = run_cli(["run", out, path, "--json", *extra], capsys)
    assert code == 2 and stdout == "" and f"{path}[3]" in one_line_error(err)


def test_streamed_npy_arrays_are_read_one_at_a_time(tmp_path):
    """``LazyInputs(stream_npy=True)`` checks a ``.npy`` file's header on construction and
    each array's values when it is read (a new array, the same values as the eager load);
    the eager load (calibration's) still refuses the whole file at once."""
    from tcc_compiler.datasets.images import LazyInputs, Preprocess, load_inputs
    from tcc_compiler.errors import InputError

    xs = np.arange(4 * 3 * 2 * 2, dtype=np.float32).reshape(4, 3, 2, 2)
    xs[2, 0, 0, 0] = np.inf
    path = tmp_path / "four.npy"
    np.save(path, xs)
    pre = Preprocess(width=2, height=2)
    lazy = LazyInputs([path], pre, (1, 3, 2, 2), stream_npy=True)
    assert len(lazy) == 4 and lazy.label(2) == f"{path}[2]"
    for j in (0, 1, 3):
        a = lazy[j]
        assert a.shape == (1, 3, 2, 2) and a.flags.c_contiguous and a.flags.writeable
        np.testing.assert_array_equal(a, xs[j:j + 1])
    with pytest.raises(InputError, match=r"four\.npy\[2\]: \.npy array holds 1 NaN/Inf"):
        lazy[2]
    with pytest.raises(InputError, match=r"four\.npy: \.npy array holds 1 NaN/Inf"):
        LazyInputs([path], pre, (1, 3, 2, 2))
    with pytest.raises(InputError, match="NaN/Inf"):
        load_inputs([path], pre, (1, 3, 2, 2))


@pytest.mark.parametrize("layout, stored, fortran", [
    ("NCHW", (5, 3, 2, 4), False),
    ("NHWC", (5, 2, 4, 3), False),   # an NHWC model's file as its ONNX input takes it
    ("NHWC", (5, 3, 3, 3), False),   # H == W == C: NHWC preferred, as the eager load does
    ("NCHW", (5, 3, 2, 4), True),    # a Fortran-order file: mapped for each read
])
def test_streamed_npy_arrays_equal_the_eager_load(tmp_path, layout, stored, fortran):
    """Each streamed array (read on its own from the file) is the eager load's, NCHW."""
    from tcc_compiler.datasets.images import LazyInputs, Preprocess, load_inputs

    xs = np.random.default_rng(6).normal(0, 1, stored).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, np.asfortranarray(xs) if fortran else xs)
    c = stored[3] if layout == "NHWC" else stored[1]
    h, w = (stored[1], stored[2]) if layout == "NHWC" else (stored[2], stored[3])
    shape, pre = (1, c, h, w), Preprocess(width=w, height=h)
    eager = load_inputs([path], pre, shape, layout)
    lazy = LazyInputs([path], pre, shape, layout, stream_npy=True)
    assert len(lazy) == len(eager) == 5
    for j in (4, 0, 2, 1, 3):   # any order
        a = lazy[j]
        assert a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
        np.testing.assert_array_equal(a, eager[j])


def test_a_streamed_npy_file_replaced_mid_run_is_refused(tmp_path):
    """A ``.npy`` file replaced by another (a new shape: a new header) after its header was
    checked is refused when the next array is read, not read at the old file's offsets
    (which gave the new file's bytes as input 1, silently)."""
    from tcc_compiler.datasets.npy import NpyArrays
    from tcc_compiler.errors import InputError

    path = tmp_path / "x.npy"
    xs = np.random.default_rng(3).random((4, 1, 8, 8), dtype=np.float32)
    np.save(path, xs)
    arrays = NpyArrays(path, (1, 1, 8, 8))
    np.testing.assert_array_equal(arrays.array(0, "x[0]"), xs[:1])
    np.save(path, np.random.default_rng(4).random((40, 3, 8, 8), dtype=np.float32))
    with pytest.raises(InputError, match=r"x\.npy: changed while being read"):
        arrays.array(1, "x[1]")
