"""The documents a newcomer reads stay true to the code: every setting is explained in
.env.example, and the README's quick start is the two commands the Makefile provides."""

from __future__ import annotations

import re
from pathlib import Path

from meterwatch.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_explains_every_setting() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    lines = text.splitlines()
    for name in Settings.model_fields:
        pattern = re.compile(rf"^#?{name.upper()}=")
        at = [i for i, line in enumerate(lines) if pattern.match(line)]
        assert at, f"{name.upper()} is not in .env.example: add it with a comment saying what it is"
        assert lines[at[0] - 1].startswith("#"), f"{name.upper()} has no comment in .env.example"


def test_readme_quick_start_is_two_make_targets_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.strip()]
    assert commands[1:] == ["make demo", "make test"]
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), f"the Makefile has no {target} target"
