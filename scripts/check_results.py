"""Refuse committed results made by code that no commit holds.

    python scripts/check_results.py              # every runs.csv git tracks under results/; exit 1 on a bad row
    python scripts/check_results.py FILE ...     # these files

Each runs.csv row records the ``git_commit`` of the tree that made it, with ``-dirty`` appended when that tree had
uncommitted changes (benchmark.harness.runs.run_provenance). A committed number must be reproducible from a commit,
so a row whose commit ends in ``-dirty``, or is empty (made outside a checkout), is refused: regenerate the result
from a clean checkout (``git stash`` or commit first, then rerun its command) and commit it again.
tests/test_committed_results.py runs this check on every committed file.
"""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def committed_runs_files(repo: Path = REPO) -> list[Path]:
    """Every runs.csv under results/ that git tracks (a working copy's untracked results are not committed)."""
    listed = subprocess.run(["git", "ls-files", "--", "results"], cwd=repo, capture_output=True, text=True,
                            check=True).stdout.split()
    return [repo / name for name in listed if Path(name).name == "runs.csv"]


def bad_rows(path: Path) -> list[str]:
    """One line per row of ``path`` not made by a clean commit: its line number and what it records."""
    problems = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "git_commit" not in (reader.fieldnames or []):
            return [f"{path}: no git_commit column; regenerate it with the current dogbench"]
        for line, row in enumerate(reader, start=2):
            commit = (row.get("git_commit") or "").strip()
            if not commit or commit.endswith("-dirty"):
                what = f"commit {commit}" if commit else "no commit (made outside a git checkout)"
                problems.append(f"{path}:{line}: {row.get('dataset', '?')} {row.get('method', '?')} "
                                f"{row.get('phase', '?')} was made by {what}")
    return problems


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or committed_runs_files()
    problems = [p for path in files for p in bad_rows(path)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} row(s) in {len({p.split(':')[0] for p in problems})} file(s) were not made by a clean "
              f"commit: regenerate those results from a clean checkout and commit them", file=sys.stderr)
        return 1
    print(f"{len(files)} runs.csv file(s): every row made by a clean commit")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
