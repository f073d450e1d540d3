"""The commands the documentation gives, extracted so that tests can run them as written.

Convention (docs/CONTRACTS.md, "Documentation"): every command a reader is meant to run
lives in a fenced ```bash block of README.md or docs/*.md. Usage synopses (with ``[...]``
or ``<...>`` placeholders) live in ```text blocks and are checked option by option against
the commands' parsers instead.

A command runs in a scratch folder laid out like a user's working directory: the
placeholder names the docs use (``RAW``, ``OUT``, ``RUN``, ``vgg.pth`` ...) are real
files or folders there, so nothing is substituted. The only rewrites are the ones a CPU
test machine forces, each declared in ``CPU_REWRITES`` with its reason.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(\w*)\s*$")
# Words that start a command of this project (or of the tools it documents).
COMMAND_START = re.compile(r"^(python3? -m |torchrun |make |htf-|ray |srun |sbatch |tensorboard )")


@dataclass(frozen=True)
class Block:
    file: Path
    line: int          # 1-based line of the opening fence
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, with its language tag."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    start, lang, body = None, "", []
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line.strip()) if line.strip().startswith("```") else None
        if match is None:
            if start is not None:
                body.append(line)
            continue
        if start is None:
            start, lang, body = number, match.group(1), []
        else:
            blocks.append(Block(path, start, lang, "\n".join(body)))
            start = None
    return blocks


def commands(text: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments and blanks dropped."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line.strip()).strip()
        pending = ""
        full = _strip_comment(full)
        if full:
            out.append(full)
    if pending.strip():
        out.append(pending.strip())
    return out


def _strip_comment(command: str) -> str:
    """Drop a trailing ``# comment`` that is not inside quotes."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError:
        return command
    if not words:
        return ""
    # Rebuild from the original text up to where the comment started.
    hash_at = _unquoted_hash(command)
    return command[:hash_at].rstrip() if hash_at is not None else command


def _unquoted_hash(command: str) -> int | None:
    quote = None
    for i, ch in enumerate(command):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            return i
    return None


def is_script(block: Block) -> bool:
    """A whole script to save as a file (it starts with ``#!``), not commands to type."""
    return block.text.lstrip().startswith("#!")


def bash_blocks() -> list[Block]:
    """Blocks of commands to type (scripts excluded: each has a test of its own)."""
    return [b for f in DOC_FILES for b in fenced_blocks(f)
            if b.lang in ("bash", "sh", "shell") and not is_script(b)]


def script_blocks() -> list[Block]:
    return [b for f in DOC_FILES for b in fenced_blocks(f) if b.lang in ("bash", "sh", "shell") and is_script(b)]


def untagged_command_blocks() -> list[Block]:
    """Blocks that hold commands but are not tagged bash: commands hidden from the tests."""
    hidden = []
    for f in DOC_FILES:
        for b in fenced_blocks(f):
            if b.lang in ("bash", "sh", "shell", "text", "python", "yaml", "json"):
                continue
            if any(COMMAND_START.match(c) for c in commands(b.text)):
                hidden.append(b)
    return hidden
