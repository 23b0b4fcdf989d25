"""`make bench`: run every bench/<name>/run.py and rewrite its table in bench/README.md.

Each benchmark package exposes ``bench/<name>/run.py`` with ``def main(argv: list[str]) ->
dict`` returning ``{"title", "command", "columns": [...], "rows": [[...], ...], "notes"?}``;
this runner adds the machine and date and writes the table between
``<!-- bench:<name>:start -->`` and ``<!-- bench:<name>:end -->`` markers (appended when absent).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"


def machine() -> str:
    """A one-line description of this machine."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} vCPU {cpu}, Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.1f} at start")


def benchmarks(only: list[str]) -> list[tuple[str, Path]]:
    """Benchmark packages under bench/, by name."""
    found = sorted((p.parent.name, p) for p in HERE.glob("**/run.py"))
    return [(n, p) for n, p in found if not only or n in only]


def run_one(name: str, path: Path, argv: list[str]) -> dict[str, Any]:
    """Import bench/<name>/run.py and call its main(argv)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name.replace('-', '_')}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    result: dict[str, Any] = module.main(argv)
    return result


def markdown(name: str, result: dict[str, Any], when: str, where: str) -> str:
    """The README block for one benchmark's result."""
    cols = result["columns"]
    lines = [f"### {result['title']}", "",
             f"`{result['command']}` — {when}, {where}.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in result["rows"]]
    if result.get("notes"):
        lines += ["", str(result["notes"])]
    return "\n".join(lines)


def write_block(text: str, name: str, block: str) -> str:
    """Replace (or append) the marked block of one benchmark."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    new = f"{start}\n{block}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: new, text)
    return text.rstrip("\n") + "\n\n" + new + "\n"


def main(argv: list[str]) -> int:
    """Run the benchmarks named in argv (all when none) and update bench/README.md.

    ``python -m bench NAME... -- ARGS`` hands ARGS to each named benchmark's main (their
    tables then show the command they ran); ``--no-readme`` leaves bench/README.md alone.
    """
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    write = "--no-readme" not in argv
    argv = [a for a in argv if a != "--no-readme"]
    console = Console()
    where = machine()
    failed = 0
    for name, path in benchmarks(argv):
        console.rule(f"bench: {name}")
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        try:
            result = run_one(name, path, extra)
        except Exception:  # one broken benchmark must not hide the others' figures
            console.print(traceback.format_exc())
            failed += 1
            continue
        block = markdown(name, result, when, where)
        if not write:
            console.print(block)
            continue
        README.write_text(write_block(README.read_text(), name, block))
        console.print(f"{name}: {len(result['rows'])} rows written to {README}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
