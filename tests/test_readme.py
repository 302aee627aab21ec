"""The README's set-up commands and CI agree (the README's test command is what CI runs)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def test_readme_starts_with_two_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert "tccc compile" in cmds[0] and "tccc run" in cmds[0] and "pip install" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci


def test_readme_photo_exists():
    first = _readme_commands()[0]
    photo = [tok for tok in first.split() if tok.endswith(".jpg")][0]
    assert (ROOT / photo).is_file()
