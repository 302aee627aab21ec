"""Issue #16's standing guarantee, through ``tools/corpus.py``: every reachable ONNX model either
compiles and runs bit-exact or is refused with exit 2 and one line naming the file; none exits
1, hangs or is killed; ``tccc ops`` calls a model supported exactly when compile succeeds.

The default run checks the contract's judge on made-up results (each violation is caught), the
runner's timeout / signal / exit-code reporting, and a small real slice of the corpus (mutants
and a few node tests); the whole corpus (about 2,400 models, ~30 min on 2 idle cores) is slow.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(scope="module")
def corpus():
    """tools/corpus.py imported as a module (with its sibling modules on sys.path)."""
    sys.path.insert(0, str(TOOLS))
    try:
        yield importlib.import_module("corpus")
    finally:
        sys.path.remove(str(TOOLS))


def _res(cx, cmd, code, stdout="", stderr="", status="exit"):
    return cx.CallResult(["-q", cmd, "m.onnx"], status, code, 0.1, stdout, stderr)


def test_judge_accepts_the_two_good_outcomes(corpus):
    cx = corpus.corpus_exec
    ops = _res(cx, "ops", 0, json.dumps([{"device": "npu", "reason": "NPU conv"}]))
    run = _res(cx, "run", 0, json.dumps({"check": {"bit_exact": True}}))
    assert cx.judge("m.onnx", ops, _res(cx, "compile", 0), run).outcome == cx.OK_COMPILED
    refused_ops = _res(cx, "ops", 2, json.dumps([{"device": "unsupported", "reason": "LRN"}]),
                       "tccc: error: m.onnx: 1 unsupported node(s)\n")
    refused = _res(cx, "compile", 2, "", "tccc: WARNING: x\ntccc: error: /a/m.onnx: Concat 'c'\n")
    v = cx.judge("/a/m.onnx", refused_ops, refused, None)
    assert v.outcome == cx.OK_REFUSED and not v.violations


def test_judge_reads_compilability_from_exit_codes_not_labels(corpus):
    """Host fallback (branch host13): ops places a node tccc has no NPU lowering for on the
    host, exits 0, and compile succeeds with a host segment. That is a compiled model, not a
    disagreement: the judge reads ops's exit code, never "unsupported op => refused"."""
    cx = corpus.corpus_exec
    places = [{"device": "npu", "reason": "NPU conv"},
              {"device": "host", "reason": "LRN: no NPU command; runs on the host (ONNX "
                                           "Runtime) in a host segment"}]
    ops = _res(cx, "ops", 0, json.dumps(places))
    run = _res(cx, "run", 0, json.dumps({"check": {"bit_exact": True}}))
    v = cx.judge("m.onnx", ops, _res(cx, "compile", 0), run)
    assert (v.outcome, v.violations) == (cx.OK_COMPILED, [])
    assert v.placements == {"npu": 1, "host": 1, "unsupported": 0}
    s = corpus.summarize([{"source": "node", "name": "a", "outcome": v.outcome,
                           "placements": v.placements, "violations": []}])
    assert s["compiled_with_host_nodes"] == {"node": 1}


@pytest.mark.parametrize("what", ["exit1", "two_lines", "no_file", "traceback", "timeout",
                                  "killed", "disagree", "disagree_compiled", "ops_lists_bad",
                                  "ops_refuses_nothing", "not_exact", "run_refused"])
def test_judge_catches_each_violation(corpus, what):
    cx = corpus.corpus_exec
    ok_ops = _res(cx, "ops", 0, json.dumps([{"device": "npu", "reason": "NPU conv"}]))
    comp = _res(cx, "compile", 0)
    run, ops = _res(cx, "run", 0, '{"check": {"bit_exact": true}}'), ok_ops
    if what == "exit1":
        comp, run = _res(cx, "compile", 1, "", "tccc: internal error: ValueError\n"), None
    elif what in ("two_lines", "no_file", "traceback"):
        err = {"two_lines": "tccc: error: m.onnx: a\ntccc: error: m.onnx: b\n",
               "no_file": "tccc: error: graph: bad\n",
               "traceback": "Traceback (most recent call last):\ntccc: error: m.onnx: x\n"}[what]
        ops = _res(cx, "ops", 2, "", "tccc: error: m.onnx: x\n")
        comp, run = _res(cx, "compile", 2, "", err), None
    elif what in ("timeout", "killed"):
        comp = _res(cx, "compile", None if what == "timeout" else 9, status=what)
        run = None
    elif what == "disagree":  # ops: compile would refuse; compile succeeded
        ops = _res(cx, "ops", 2, json.dumps([{"device": "unsupported", "reason": "x"}]),
                   "tccc: error: m.onnx: unsupported\n")
    elif what == "disagree_compiled":  # ops: compiles; compile refused
        comp, run = _res(cx, "compile", 2, "", "tccc: error: m.onnx: value 'y' overflows\n"), None
    elif what == "ops_lists_bad":  # exit 0, yet a node is unsupported
        ops = _res(cx, "ops", 0, json.dumps([{"device": "unsupported", "reason": "LRN"}]))
    elif what == "ops_refuses_nothing":  # exit 2, yet every node is placed
        ops = _res(cx, "ops", 2, json.dumps([{"device": "host", "reason": "LRN"}]),
                   "tccc: error: m.onnx: x\n")
        comp, run = _res(cx, "compile", 2, "", "tccc: error: m.onnx: x\n"), None
    elif what == "not_exact":
        run = _res(cx, "run", 1, '{"check": {"bit_exact": false}}')
    elif what == "run_refused":
        run = _res(cx, "run", 2, "", "tccc: error: out/manifest.json: bad\n")
    v = cx.judge("m.onnx", ops, comp, run)
    assert v.violations and v.outcome not in (cx.OK_COMPILED, cx.OK_REFUSED), v


def test_zoo_refusing_a_size_is_a_refusal_not_a_violation(corpus, tmp_path):
    """A YOLO cannot be built at 96x52 (52 is no multiple of its stride 32): tccc zoo says so
    in one line, exit 2. That case is an expected refusal; a zoo crash stays a violation."""
    cm = corpus
    cfg = cm.Config(str(tmp_path), 60.0, 60.0, 4 << 30, "fork", False)
    case = cm.Case("zoo", "yolov8n@96x52x3", str(tmp_path / "y.onnx"), ("yolov8n", "96x52x3"))
    cm.corpus_exec.preload()
    rec = cm.process(case, cfg)
    assert (rec["outcome"], rec["violations"]) == (cm.OK_ZOO_REFUSED, [])
    assert "multiples of 32" in rec["message"]
    s = cm.summarize([rec])
    assert s["violations"] == [] and s["by_source"] == {"zoo": {cm.OK_ZOO_REFUSED: 1}}


def _fake_main(behaviour):
    def fake(argv):
        if behaviour == "hang":
            time.sleep(60)
        if behaviour == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        if behaviour == "raise":
            raise RuntimeError("escaped main")
        print("out", flush=True)
        print("tccc: error: m.onnx: x", file=sys.stderr)
        return 2
    return fake


@pytest.mark.parametrize("behaviour,status,code", [("exit2", "exit", 2), ("hang", "timeout", None),
                                                   ("segv", "killed", signal.SIGSEGV),
                                                   ("raise", "exit", 1)])
def test_runner_reports_exit_timeout_and_signal(corpus, monkeypatch, behaviour, status, code):
    cli = importlib.import_module("tcc_compiler.cli.main")  # the module, not the function
    monkeypatch.setattr(cli, "main", _fake_main(behaviour))  # the forked child inherits it
    t0 = time.monotonic()
    res = corpus.corpus_exec.run_cli(["ops"], timeout_s=1.0, mem_bytes=4 << 30)
    assert (res.status, res.code) == (status, code)
    assert time.monotonic() - t0 < 10
    if behaviour == "exit2":
        assert res.stdout == "out\n" and res.stderr == "tccc: error: m.onnx: x\n"
    if behaviour == "raise":
        assert "escaped main" in res.stderr


def test_image_input_whc_derivation(corpus, make_model):
    from onnx import helper

    cm = corpus
    conv = helper.make_node("Relu", ["x"], ["y"])
    assert cm.image_input_whc(make_model([conv], [1, 3, 20, 30])) == "30x20x3"
    assert cm.image_input_whc(make_model([conv], [1, 3, 20])) is None
    two = make_model([conv], [1, 3, 20, 30])
    two.graph.input.append(two.graph.input[0])
    assert cm.image_input_whc(two) is None
    two.graph.input.pop()
    two.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    assert cm.image_input_whc(two) is None


def test_small_corpus_slice_keeps_the_contract(corpus, tmp_path, capsys):
    """Mutants (and their unmutated bases) plus a few node tests, end to end through the CLI."""
    out = tmp_path / "corpus.json"
    only = r"^mutants/|^node/test_(conv_with_strides_padding|lrn|relu)$"
    code = corpus.main(["--sources", "node,mutants", "--mutants", "3", "--seed", "3",
                        "--only", only,
                        "--jobs", "2", "--timeout", "120", "--workdir", str(tmp_path / "w"),
                        "--json-out", str(out)])
    report = json.loads(out.read_text())
    assert report["violations"] == [], report["violations"]
    assert code == 0
    assert report["corpus_size"] == 3 + 3 + 3
    counts = report["by_source"]["mutants"]
    assert counts.get(corpus.OK_COMPILED, 0) >= 3  # at least the three bases
    assert "corpus: 9 models" in capsys.readouterr().out


@pytest.mark.slow
def test_whole_corpus_keeps_the_contract(corpus, tmp_path):
    """The whole corpus (zoo at --quick sizes; tools/corpus.py without --quick for the seed
    resolutions): no violation. ~15 min with 2 jobs on an idle 2-core machine. The last
    violations it found have tests of their own: huge or non-finite parameters, host outputs
    that overflow into an NPU segment and models with nothing left to compute
    (tests/frontend/test_parameter_magnitudes.py), Conv with both auto_pad and pads
    (tests/frontend/test_corpus_findings_frontend.py), out of memory under the corpus's
    address-space limit (tests/cli/test_exit_codes.py)."""
    out = tmp_path / "corpus.json"
    code = corpus.main(["--quick", "--jobs", "2", "--workdir", str(tmp_path / "w"),
                        "--json-out", str(out)])
    report = json.loads(out.read_text())
    assert report["violations"] == [], report["violations"][:20]
    assert code == 0
    assert report["corpus_size"] > 2000
