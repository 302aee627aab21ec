"""Output paths as the CLI meets them: recompiling never deletes the user's files, symlinks stay
symlinks, devices and bad paths are one-line errors (exit 2, nothing on stdout), files are
written whole.

Expected behaviour is stated from the POSIX meaning of the paths (a symlink must stay a
symlink, a device must not be replaced by a file).
"""

from __future__ import annotations

import os

import onnx
import pytest
from helpers import PHOTO
from helpers.cli import one_line_error, run_cli


def test_recompile_refuses_foreign_files_and_replaces_own(small_folder, tmp_path, capsys):
    import shutil

    model, src = small_folder
    out = tmp_path / "out"
    shutil.copytree(src, out)
    (out / "notes.txt").write_text("mine\n")
    (out / "keep").mkdir()
    code, _, err = run_cli(["compile", str(model), "--input", "16x16x3", "-o", str(out)], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "keep/" in line and "notes.txt" in line and "move them out" in line
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "keep").is_dir()
    (out / "notes.txt").unlink()
    (out / "keep").rmdir()
    (out / "report.html").write_text("old")   # files tccc writes are replaced
    (out / "analysis.json").write_text("{}")
    code, _, err = run_cli(["compile", str(model), "--input", "16x16x3", "-o", str(out)], capsys)
    assert code == 0, err
    assert not (out / "report.html").exists() and (out / "manifest.json").is_file()


@pytest.mark.parametrize("argv", [
    ["inspect", "{out}", "--csv", "{tmp}"],
    ["inspect", "{out}", "--csv", "{afile}/x.csv"],
    ["inspect", "{out}", "--csv", "{tmp}/nodir/x.csv"],
    ["analyze", "{out}", "{model}", PHOTO, "--out", "{tmp}"],
    ["report", "{out}", "-o", "{tmp}"],
    ["export-onnx", "{out}", "-o", "{afile}/m.onnx"],
    ["zoo", "resnet18", "-o", "{tmp}"],
    ["compile", "{model}", "--input", "16x16x3", "-o", "{afile}/sub"],
])
def test_bad_output_paths_are_one_line_errors(small_folder, tmp_path, capsys, argv):
    model, out = small_folder
    (tmp_path / "afile").write_text("x")
    argv = [a.format(out=out, tmp=tmp_path, afile=tmp_path / "afile", model=model)
            for a in argv]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 2, err
    line = one_line_error(err)
    assert "is a folder" in line or "is a file, not a folder" in line or "does not exist" in line
    assert stdout == ""


def test_csv_is_written_whole_with_normal_mode(small_folder, tmp_path, capsys):
    _, out = small_folder
    code, _, err = run_cli(["inspect", str(out), "--csv", str(tmp_path / "t.csv")], capsys)
    assert code == 0, err
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("name") or \
        (tmp_path / "t.csv").stat().st_size > 0
    assert (tmp_path / "t.csv").stat().st_mode & 0o044  # readable by others (umask 022)
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary left


def test_zoo_output_symlink_kept(tmp_path, capsys):
    """`tccc zoo NAME -o ln.onnx` writes the file the link points at."""
    real = tmp_path / "real.onnx"
    real.write_bytes(b"placeholder")
    link = tmp_path / "ln.onnx"
    link.symlink_to(real)
    code, _, err = run_cli(["-q", "zoo", "resnet18", "-o", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink()
    onnx.checker.check_model(onnx.load(str(real)))


def test_compile_output_symlink_to_folder_kept(tmp_path, gap_fc_model, capsys):
    real = tmp_path / "real_out"
    real.mkdir()
    link = tmp_path / "lnk_out"
    link.symlink_to(real, target_is_directory=True)
    code, _, err = run_cli(["-q", "compile", str(gap_fc_model), "-o", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert (real / "npu_cmd.bin").is_file() and (real / "manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_compile_output_device_refused(tmp_path, gap_fc_model, capsys):
    code, _, err = run_cli(["-q", "compile", str(gap_fc_model), "-o", "/dev/null"], capsys)
    assert code == 2
    assert "/dev/null" in one_line_error(err)



@pytest.mark.parametrize("argv, victim", [
    (["report", "{out}", "-o", "{out}/manifest.json"], "manifest.json"),
    (["inspect", "{out}", "--csv", "{out}/report.json"], "report.json"),
    (["export-onnx", "{out}", "-o", "{out}/quantized.tir"], "quantized.tir"),
    (["export-onnx", "{out}", "-o", "{out}/../out/npu_cmd.bin"], "npu_cmd.bin"),
    (["analyze", "{out}", "{model}", PHOTO, "--out", "{out}/manifest.json"], "manifest.json"),
    (["analyze", "{out}", "{model}", PHOTO, "--out", "{model}"], None),
])
def test_an_output_over_a_file_the_command_reads_is_refused(small_folder, tmp_path, capsys,
                                                              argv, victim):
    """``tccc report DIR -o DIR/manifest.json`` (and inspect --csv, export-onnx -o, analyze
    --out into the folder or over the model) replaced the file and exited 0: the folder then
    loaded nowhere (export-onnx even crashed on it: exit 1). Refused, nothing written."""
    import shutil

    model, src = small_folder
    out = tmp_path / "out"
    shutil.copytree(src, out)
    local_model = tmp_path / "m.onnx"
    shutil.copy(model, local_model)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    model_bytes = local_model.read_bytes()
    code, stdout, err = run_cli([a.format(out=out, model=local_model) for a in argv], capsys)
    assert code == 2 and stdout == ""
    line = one_line_error(err)
    assert ("of the compiled folder" in line and victim in line) if victim else \
        "an input of this command" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert local_model.read_bytes() == model_bytes


def test_the_files_a_command_owns_in_the_folder_are_still_rewritten(small_folder, tmp_path,
                                                                     capsys):
    """analysis.json and report.html are the folder files analyze and report write."""
    import shutil

    model, src = small_folder
    out = tmp_path / "out"
    shutil.copytree(src, out)
    (out / "report.html").write_text("old")
    code, _, err = run_cli(["report", out, "-o", out / "report.html"], capsys)
    assert code == 0, err
    assert (out / "report.html").read_text() != "old"
    code, _, err = run_cli(["analyze", out, model, PHOTO, "--out", out / "analysis.json"],
                           capsys)
    assert code == 0, err
