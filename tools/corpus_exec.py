"""Run one ``tccc`` command line as a child process with a time and memory limit, and judge a
corpus case from its three commands (``ops``, ``compile``, ``run --check``).

Two ways to start the child (:func:`run_cli`):

- ``fork`` (default): the calling process has imported tccc once (:func:`preload`); each
  command is an ``os.fork()`` of it that calls :func:`tcc_compiler.cli.main.main` with the
  command's argv and exits with its return value. Same exit code, stdout and stderr as the
  ``tccc`` executable, without the ~2 s interpreter start per command (the corpus runs
  ~4,000 commands).
- ``exec``: a fresh interpreter running what the ``tccc`` console script runs (slower).

Either way the child runs in its own process group with ``RLIMIT_AS`` set, is killed (the
whole group, by its id) when it outlives the time limit, and its exit status is recorded as an
exit code, ``timeout`` or ``killed`` (by a signal: SIGSEGV, SIGABRT, the kernel's OOM killer).

The contract a case is judged by (:func:`judge`), from issue #16:

- every command exits 0 or 2, never 1 (internal error), never hangs past the limit, never dies
  by a signal;
- an exit 2 prints exactly one ``tccc: error: ...`` line on stderr naming the model file (other
  stderr lines may only be ``tccc: WARNING:`` diagnostics: no tracebacks, no Python warnings);
- ``tccc ops`` calls the model supported (exit 0) exactly when ``tccc compile`` succeeds, and
  its node list agrees with its exit code (no ``unsupported`` node on exit 0); nodes it places
  on the ``host`` belong to a compiled model (host segments), not to a refused one;
- a model that compiles runs with ``--check`` and is bit-exact (executor == golden model).
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

#: Outcomes of a case that meet the contract.
OK_COMPILED = "compiled, ran bit-exact"
OK_REFUSED = "refused (exit 2, one line)"
#: Violations (a case may have several; its outcome is the first).
V_EXIT = "exit code not 0/2"
V_TIMEOUT = "timeout"
V_KILLED = "killed by a signal"
V_MESSAGE = "exit 2 without one clean error line naming the file"
V_DISAGREE = "ops and compile disagree"
V_NOT_EXACT = "run --check not bit-exact"
V_RUN_REFUSED = "run refused a compiled model"

#: ``tccc ops --json`` device labels (tcc_compiler/placement.py). A model compiles exactly when
#: no node is ``unsupported``: ``host`` nodes (Softmax/ArgMax at the end today, any node once
#: compile can fall back to host segments) are part of a compiled package, never a refusal.
NPU_LABEL, HOST_LABEL, UNSUPPORTED_LABEL = "npu", "host", "unsupported"
V_OPS_INCONSISTENT = "ops exit code and its node list disagree"


@dataclass
class CallResult:
    """One command's result.

    Attributes:
        argv: the tccc arguments (after ``tccc``).
        status: ``"exit"``, ``"timeout"`` or ``"killed"``.
        code: exit code (status ``exit``), the signal number (``killed``) or None (timeout).
        seconds: wall time, s.
        stdout, stderr: the captured text (stderr truncated to 4,000 characters).
    """

    argv: list[str]
    status: str
    code: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict (stdout dropped when longer than 2,000 characters)."""
        d = asdict(self)
        if len(d["stdout"]) > 2000:
            d["stdout"] = d["stdout"][:2000] + "..."
        return d


def preload() -> None:
    """Import tccc's CLI and the modules every command needs, so forked children start warm."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    import tcc_compiler.api.folders
    import tcc_compiler.driver
    import tcc_compiler.placement  # noqa: F401
    from tcc_compiler.cli.main import build_parser

    build_parser()  # imports every command module


def _child(argv: list[str], out_fd: int, err_fd: int, mem_bytes: int) -> None:
    """Body of a forked child: never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), write_through=True)
        import faulthandler
        import logging

        faulthandler.enable(file=sys.stderr)  # a crash's Python stack lands in the capture

        logging.root.handlers.clear()  # main() configures logging afresh, as in a new process
        from tcc_compiler.cli.main import main

        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report what escaped main() like Python would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _wait(pid: int, timeout_s: float) -> tuple[str, int | None]:
    """Wait for child ``pid``; kill its process group after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return "killed", os.WTERMSIG(status)
            return "exit", os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return "timeout", None
        time.sleep(delay)
        delay = min(0.1, delay * 2)


def _read(f) -> str:
    f.seek(0)
    return f.read().decode("utf-8", "replace")


def run_cli(argv: list[str], timeout_s: float, mem_bytes: int, mode: str = "fork"
            ) -> CallResult:
    """Run ``tccc ARGV`` as a child process (see the module docstring for ``mode``).

    Args:
        argv: the arguments after ``tccc`` (e.g. ``["-q", "compile", "m.onnx", "-o", "d"]``).
        timeout_s: wall-time limit, s; the child's process group is killed after it.
        mem_bytes: address-space limit of the child (``RLIMIT_AS``), bytes.
        mode: ``"fork"`` or ``"exec"``.

    Returns:
        The :class:`CallResult`.
    """
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        if mode == "exec":
            status, code = _run_exec(argv, out, err, timeout_s, mem_bytes)
        else:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(argv, out.fileno(), err.fileno(), mem_bytes)
            status, code = _wait(pid, timeout_s)
        return CallResult(list(argv), status, code, round(time.monotonic() - t0, 3),
                          _read(out), _read(err)[:4000])


_EXEC_SCRIPT = "import sys; from tcc_compiler.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _run_exec(argv, out, err, timeout_s, mem_bytes) -> tuple[str, int | None]:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))

    # what the ``tccc`` console script runs (``-m tcc_compiler.cli.main`` adds a runpy warning)
    p = subprocess.Popen([sys.executable, "-c", _EXEC_SCRIPT, *argv],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                         start_new_session=True, preexec_fn=limit)  # noqa: PLW1509 - one thread
    try:
        code = p.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return "timeout", None
    return ("killed", -code) if code < 0 else ("exit", code)


@dataclass
class Verdict:
    """How a case went: its outcome, its violations and the commands' results."""

    outcome: str
    violations: list[str] = field(default_factory=list)
    ops_supported: bool | None = None
    placements: dict[str, int] | None = None
    message: str = ""


def error_line_problem(res: CallResult, model_path: str) -> str | None:
    """Why an exit-2 result's stderr breaks the one-line rule (None when it keeps it)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("tccc: error:")]
    others = [ln for ln in lines if not ln.startswith(("tccc: error:", "tccc: WARNING:"))]
    if len(errors) != 1:
        return f"{len(errors)} 'tccc: error:' lines"
    if others:
        return f"stray stderr line: {others[0][:200]}"
    if model_path not in errors[0] and os.path.basename(model_path) not in errors[0]:
        return "the error line does not name the model file"
    return None


def ops_placements(res: CallResult) -> dict[str, int] | None:
    """How many nodes ``tccc ops MODEL --json`` put on each device (``{"npu": n, "host": n,
    "unsupported": n}``), None when it printed no node list (an exit 2 whose refusal names no
    node, e.g. a model that cannot be read)."""
    try:
        places = json.loads(res.stdout)
    except ValueError:
        return None
    if not isinstance(places, list):
        return None
    counts = dict.fromkeys((NPU_LABEL, HOST_LABEL, UNSUPPORTED_LABEL), 0)
    for p in places:
        dev = p.get("device") if isinstance(p, dict) else None
        counts[dev] = counts.get(dev, 0) + 1
    return counts


def ops_verdict(res: CallResult) -> bool | None:
    """Does ``tccc ops MODEL --json`` call the model compilable? None when ops failed.

    Read from ops's exit code, its documented answer (0: compile would succeed, 2: it would
    refuse), not from the labels: which nodes tccc can compile (on the NPU or, with host
    fallback, on the host) is the compiler's business; the corpus checks only that ops and
    compile agree. That the labels agree with the exit code is checked by :func:`judge`.
    """
    if res.status != "exit" or res.code not in (0, 2):
        return None
    return res.code == 0


def _ops_consistency(res: CallResult) -> list[str]:
    """ops's node list against its exit code: exit 0 lists no ``unsupported`` node and at
    least one node; an exit 2 that lists nodes marks at least one ``unsupported``."""
    placed = ops_placements(res)
    if res.status != "exit" or placed is None:
        return [f"{V_OPS_INCONSISTENT}: exit 0 without a node list"] if (
            res.status == "exit" and res.code == 0) else []
    bad = placed.get(UNSUPPORTED_LABEL, 0)
    if res.code == 0 and (bad or not sum(placed.values())):
        return [f"{V_OPS_INCONSISTENT}: exit 0 with {bad} unsupported of "
                f"{sum(placed.values())} node(s)"]
    if res.code == 2 and not bad:
        return [f"{V_OPS_INCONSISTENT}: exit 2 but no node is unsupported"]
    return []


def _call_violations(res: CallResult | None, model_path: str) -> list[str]:
    if res is None:
        return []
    if res.status == "timeout":
        return [f"{V_TIMEOUT}: tccc {res.argv[1]}"]
    if res.status == "killed":
        return [f"{V_KILLED}: tccc {res.argv[1]} (signal {res.code})"]
    if res.code not in (0, 2):
        return [f"{V_EXIT}: tccc {res.argv[1]} exited {res.code}"]
    if res.code == 2:
        why = error_line_problem(res, model_path)
        if why:
            return [f"{V_MESSAGE}: tccc {res.argv[1]}: {why}"]
    return []


def judge(model_path: str, ops: CallResult, comp: CallResult, run: CallResult | None
          ) -> Verdict:
    """The :class:`Verdict` of one case from its three commands' results (``run`` is None when
    compile did not succeed)."""
    v = Verdict(outcome="")
    for res in (ops, comp):
        v.violations += _call_violations(res, model_path)
    v.violations += _ops_consistency(ops)
    v.ops_supported = ops_verdict(ops)
    v.placements = ops_placements(ops)
    compiled = comp.status == "exit" and comp.code == 0
    if v.ops_supported is not None and comp.status == "exit" and comp.code in (0, 2) \
            and v.ops_supported != compiled:
        v.violations.append(f"{V_DISAGREE}: ops says "
                            f"{'supported' if v.ops_supported else 'unsupported'}, compile "
                            f"{'succeeded' if compiled else 'refused'}")
    if run is not None:
        v.violations += _run_violations(run, model_path)
    if comp.status == "exit" and comp.code == 2:
        v.message = comp.stderr.strip().splitlines()[-1] if comp.stderr.strip() else ""
    v.outcome = v.violations[0].split(":")[0] if v.violations else (
        OK_COMPILED if compiled else OK_REFUSED)
    return v


def _run_violations(run: CallResult, model_path: str) -> list[str]:
    if run.status != "exit" or run.code not in (0, 1, 2):
        return _call_violations(run, model_path)
    if run.code == 2:
        return [f"{V_RUN_REFUSED}: {run.stderr.strip()[:300]}"]
    try:
        out = json.loads(run.stdout)
    except ValueError:
        out = None
    exact = isinstance(out, dict) and out.get("check", {}).get("bit_exact") is True
    if run.code == 1 and isinstance(out, dict) and not exact:
        return [f"{V_NOT_EXACT}"]
    if run.code == 1:
        return [f"{V_EXIT}: tccc run exited 1: {run.stderr.strip()[:300]}"]
    return [] if exact else [f"{V_NOT_EXACT}: run printed {run.stdout[:200]!r}"]
