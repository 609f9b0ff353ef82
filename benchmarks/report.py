"""Writing benchmark sections into one markdown file, each between its own markers, and their plots.

Every part of ``pcdiff bench`` produces a :class:`Section`. ``write_sections`` replaces that part's
previous section in the file (keeping everything else: sections of other parts, text written by
hand) or appends it, and saves the section's figures next to the file as ``<stem>_<key>.png``.
Files are replaced atomically: a reader sees the old file or the new one, never half of one. Each
section names the commit its code came from: a later change to training can move a section's
figures, and a rerun of its command reproduces them only on the same code.
"""
from __future__ import annotations

import functools
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pcdiff.files import atomic_write, atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
CODE_PATHS = ("pcdiff", "structures", "benchmarks")     # what a section's figures depend on (not the docs)
HEADER = ("# Benchmarks\n\nWritten by `pcdiff bench` (see `benchmarks/README.md`): every number is measured in "
          "one run and read as a ratio between contenders timed side by side, not as an absolute time.\n")


def markers(key: str) -> tuple[str, str]:
    return f"<!-- pcdiff-bench:{key}:begin -->", f"<!-- pcdiff-bench:{key}:end -->"


@dataclass
class Section:
    """One part's results.

    key: short name (also the marker and the figure's file name); title: the section's heading;
    body: markdown; figures: ``draw(matplotlib Figure)`` callables, one PNG each; placeholder: True
    when the part could not run here (e.g. no GPU): it fills an empty slot but never replaces a
    section measured earlier.
    """
    key: str
    title: str
    body: str
    figures: list[Callable] = field(default_factory=list)
    placeholder: bool = False

    def figure_paths(self, markdown: Path) -> list[Path]:
        suffixes = [""] if len(self.figures) == 1 else [f"_{i + 1}" for i in range(len(self.figures))]
        return [markdown.with_name(f"{markdown.stem}_{self.key}{s}.png") for s in suffixes]

    def markdown(self, markdown: Path) -> str:
        begin, end = markers(self.key)
        images = "".join(f"\n![{self.title}]({p.name})\n" for p in self.figure_paths(markdown))
        version = code_version()
        code = "" if self.placeholder or version is None else f"\nCode: commit {version}.\n"
        return f"{begin}\n## {self.title}\n\n{self.body.rstrip()}\n{code}{images}{end}\n"


@functools.cache
def code_version() -> str | None:
    """The commit of the code this process loaded (short hash, "with uncommitted changes" when its code
    differed from it), or None outside a git checkout. Read once, at import: a benchmark that runs for
    an hour names the code it started with, whatever is committed meanwhile."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != ROOT:     # a copy inside another repository
            return None
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    except (OSError, subprocess.SubprocessError):
        return None
    return head + (" with uncommitted changes" if changed else "")


def replace_section(text: str, key: str, section_text: str) -> str:
    """``text`` with the block between ``key``'s markers replaced by ``section_text`` (appended if absent)."""
    begin, end = markers(key)
    if begin in text and end in text.split(begin, 1)[1]:
        head, rest = text.split(begin, 1)
        return head + section_text + rest.split(end, 1)[1].lstrip("\n")
    return text.rstrip("\n") + "\n\n" + section_text


def has_section(text: str, key: str) -> bool:
    begin, end = markers(key)
    return begin in text and end in text.split(begin, 1)[1]


def write_sections(path: Path, sections: list[Section], header: str = HEADER) -> list[Path]:
    """Put every section into ``path`` (created with ``header`` if new) and save its figures.

    Returns the files written. A placeholder section is skipped when the file already holds a
    section with its key.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else header
    written = []
    for section in sections:
        if section.placeholder and has_section(text, section.key):
            continue
        for draw, png in zip(section.figures, section.figure_paths(path)):
            save_figure(draw, png)
            written.append(png)
        text = replace_section(text, section.key, section.markdown(path))
    atomic_write_text(path, text)
    return [path] + written


def save_figure(draw: Callable, path: Path, size=(11, 4.2)) -> None:
    """``draw(fig)`` on a fresh matplotlib Figure, saved to ``path`` atomically."""
    from matplotlib.figure import Figure   # no pyplot: no global backend state, renders with Agg
    fig = Figure(figsize=size)
    draw(fig)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def invocation(module: str, argv: list[str] | None) -> str:
    """The command line a benchmark was run with, for its report: ``python -m <module> <arguments>``."""
    return " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)])


def publish(body: str, out: str | Path | None, key: str, title: str) -> None:
    """Print a benchmark's markdown and, given ``out``, put it there as the section ``key``."""
    print(body)
    if out:
        write_sections(Path(out), [Section(key, title, body)])


code_version()          # read at import: the code this process loaded
