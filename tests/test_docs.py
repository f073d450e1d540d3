"""The documentation's commands are the tested commands.

Every ```bash block of README.md and docs/*.md runs here, in order, per page, in a scratch
folder laid out as a user's working directory (see tests/doc_commands.py). A command that
drifts from the code fails this test with the page and line that hold it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doc_commands import (DOC_FILES, ROOT, bash_blocks, commands, fenced_blocks, script_blocks,
                                untagged_command_blocks)
from tests.doc_workspace import prepare_workspace

# Rewrites a 2-core machine without a GPU forces, each with its reason. Nothing else in a
# documented command is changed.
CPU_REWRITES: list[tuple[re.Pattern, str, str]] = [
    (re.compile(r"--nproc-per-node (?:[3-9]|\d\d+)\b"), "--nproc-per-node 2",
     "more processes than the test machine's 2 cores"),
    (re.compile(r"--device cuda(?::\d+)?\b"), "--device cpu", "no GPU in the tests"),
    (re.compile(r"^srun "), "", "no SLURM here: the line srun would start on each node"),
]
# Training commands on full-size presets get a budget the CPU allows (the preset's own
# budget is days on a GPU); every other setting of the preset is kept.
FULL_SIZE_BUDGET = ["--set", "train.max_steps=2", "--set", "data.batch_size=4",
                    "--set", "data.val_batch_size=4", "--set", "data.workers=0"]
# Commands the suite cannot run from inside itself, and what covers them instead.
NOT_RUN_HERE = {
    "make test": "is what CI runs (.ci/run)",
    "make demo": "runs at toy scale in tests/test_apps_demo.py (the miniature demo)",
    "tensorboard --logdir": "starts a web server that never returns",
}


def closest_runnable(command: str) -> str:
    for pattern, replacement, _why in CPU_REWRITES:
        command = pattern.sub(replacement, command)
    if re.search(r"-m train\b", command) and not re.search(r"configs/train/tiny\.yaml", command):
        command += " " + " ".join(FULL_SIZE_BUDGET)
    return command


def skipped_reason(command: str) -> str | None:
    for start, why in NOT_RUN_HERE.items():
        if command.startswith(start):
            return why
    return None


def pages_with_commands() -> list[Path]:
    return sorted({b.file for b in bash_blocks()})


def _env(workspace: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env["TORCH_HOME"] = str(workspace / "torch-home")
    env["HTF_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("page", pages_with_commands(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_runs_as_written(page: Path, tmp_path: Path):
    workspace = prepare_workspace(tmp_path / "ws")
    env = _env(workspace)
    ran = 0
    for block in (b for b in bash_blocks() if b.file == page):
        for command in commands(block.text):
            if skipped_reason(command):
                continue
            runnable = closest_runnable(command)
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", runnable], cwd=workspace,
                                  env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, (
                f"{block.where}: documented command failed (exit {proc.returncode}):\n"
                f"  {command}\n  ran as: {runnable}\n--- output ---\n"
                f"{(proc.stdout + proc.stderr)[-4000:]}")
            ran += 1
    assert ran, f"{page}: has bash blocks but no command ran"


def test_no_command_hides_in_an_untagged_block():
    hidden = [f"{b.where} ({b.lang or 'untagged'})" for b in untagged_command_blocks()]
    assert not hidden, ("blocks with commands must be ```bash (run by the tests) or ```text "
                        f"(a synopsis, checked against --help): {hidden}")


def test_every_script_a_page_holds_is_run_by_a_test_that_reads_it_from_the_page():
    tests_text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for block in script_blocks():
        page = str(block.file.relative_to(ROOT))
        assert page in tests_text, f"{block.where}: a script block no test takes from {page}"


def test_every_exemption_names_a_documented_command():
    documented = [c for b in bash_blocks() for c in commands(b.text)]
    for start in NOT_RUN_HERE:
        assert any(c.startswith(start) for c in documented), f"stale exemption: {start}"


# ----------------------------------------------------------------------- synopses
SYNOPSIS_COMMAND = re.compile(r"(?:python3? -m|torchrun .*?-m) ([\w.]+)(?: (run|index|decode|flow|audio|pack))?")


def synopsis_options() -> list[tuple[str, str, list[str], str]]:
    """(module, subcommand, --options, where) for every command line of a ```text block
    and every inline `python -m ...` span of the pages."""
    found = []
    for page in DOC_FILES:
        spans = [(b.where, c) for b in fenced_blocks(page) if b.lang == "text" for c in commands(b.text)]
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for span in re.findall(r"`([^`]*-m [^`]*)`", line):
                spans.append((f"{page.relative_to(ROOT)}:{number}", span))
        for where, text in spans:
            match = SYNOPSIS_COMMAND.search(text)
            if not match:
                continue
            options = re.findall(r"(?<![\w-])(--[a-z][\w-]*)", text[match.end():])
            found.append((match.group(1), match.group(2) or "", options, where))
    return found


_HELP_CACHE: dict[tuple[str, str], str] = {}


def _help(module: str, sub: str) -> str:
    key = (module, sub)
    if key not in _HELP_CACHE:
        argv = [sys.executable, "-m", module, *([sub] if sub else []), "--help"]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        _HELP_CACHE[key] = proc.stdout if proc.returncode == 0 else ""
    return _HELP_CACHE[key]


def test_every_option_a_page_names_exists_in_its_command():
    missing = []
    for module, sub, options, where in synopsis_options():
        if module.startswith(("torch", "pytest")) or not options:
            continue
        help_text = _help(module, sub)
        assert help_text, f"{where}: `python -m {module} {sub} --help` fails"
        missing += [f"{where}: {module} {sub} {o}" for o in options
                    if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", help_text)]
    assert not missing, "options the docs name that the commands do not have:\n" + "\n".join(missing)


# "docs/train.md, *Loop*", 'docs/train.md, "The map blur"', "README, *A family of worlds*":
# a section cited by its page and title, in the pages, the presets' comments and the code.
CITATION = re.compile(r"(?<!repository )\b(README(?:\.md)?|docs/[\w.-]+\.md)\)?, (?:\*([^*]+)\*|\"([^\"]+)\")")
CITING_FILES = [*DOC_FILES, *sorted((ROOT / "configs").rglob("*.yaml")),
                *sorted(p for d in ("htf", "pipeline", "train", "eval", "apps", "bench")
                        for p in (ROOT / d).rglob("*.py"))]


def _headings(page: Path) -> list[str]:
    return [re.sub(r"^#+\s*", "", line).strip() for line in page.read_text().splitlines()
            if re.match(r"^#{1,6} ", line)]


def _flowing(text: str) -> str:
    """The text with line breaks (and a YAML or Python comment's leading '#') as spaces, so a
    title broken over two lines reads as one."""
    return re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)


def test_every_section_cited_by_page_and_title_is_a_heading_of_that_page():
    broken = []
    for source in CITING_FILES:
        for m in CITATION.finditer(_flowing(source.read_text())):
            page = ROOT / ("README.md" if m.group(1).startswith("README") else m.group(1))
            title = (m.group(2) or m.group(3)).rstrip("…. ")
            if not page.exists() or not any(h.startswith(title) for h in _headings(page)):
                broken.append(f"{source.relative_to(ROOT)}: {m.group(1)}, '{title}'")
    assert not broken, "cited sections that their page does not have:\n" + "\n".join(broken)
