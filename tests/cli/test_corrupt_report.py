"""A corrupt or ill-typed report.json: ``disasm`` warns and goes on without source names;
``inspect`` and ``report`` refuse in one line naming the file and the field (exit 2).
"""

from __future__ import annotations

import pytest
from helpers.cli import one_line_error, run_cli


@pytest.mark.parametrize("content", [b"\xff\xfe{", b"{not json", b"[1, 2]"])
def test_corrupt_report_json(small_folder, tmp_path, capsys, caplog, content):
    import shutil

    _, src = small_folder
    out = tmp_path / "o"
    shutil.copytree(src, out)
    (out / "report.json").write_bytes(content)
    code, stdout, err = run_cli(["disasm", str(out)], capsys)
    assert code == 0, err
    warned = caplog.text + err  # the warning goes to stderr via logging
    assert "report.json" in warned and "without source names" in warned and "CONV" in stdout
    code, stdout, err = run_cli(["inspect", str(out)], capsys)
    assert code == 2
    assert "report.json" in one_line_error(err) and stdout == ""


@pytest.mark.parametrize("content,field", [
    ("[]", "top level"), ('{"layers": [{"name": 5}]}', "layers[0].name"),
    ('{"layers": {}}', "layers: expected a list"),
    ('{"layers": [{"name": "a"}]}', "layers[0].op: missing"),
    ("SOURCE_NULL", "layers[0].source"), ("RANGES_BACKWARDS", "layers[0].command_ranges"),
    ('{"estimated_latency_ms": "x"}', "estimated_latency_ms")])
def test_corrupt_report_fields_one_line_exit_2(gap_folder, tmp_path, capsys, content, field):
    import json
    import shutil

    out = tmp_path / "o"
    shutil.copytree(gap_folder, out)
    if content == "SOURCE_NULL":
        rep = json.loads((out / "report.json").read_text())
        rep["layers"][0]["source"] = None
        content = json.dumps(rep)
    if content == "RANGES_BACKWARDS":
        rep = json.loads((out / "report.json").read_text())
        rep["layers"][0]["command_ranges"] = [[5, 2]]
        content = json.dumps(rep)
    (out / "report.json").write_text(content)
    for argv in (["report", str(out), "-o", str(tmp_path / "r.html")], ["inspect", str(out)],
                 ["inspect", str(out), "--json"]):
        code, stdout, err = run_cli(argv, capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and stdout == "" and len(lines) == 1, (argv, err)
        assert "report.json" in lines[0] and field in lines[0], (argv, lines[0])
    assert not (tmp_path / "r.html").exists()

