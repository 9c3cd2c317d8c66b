"""The checks to run the first time a GPU is at hand, in one go (`make gpu-check`), sized for a single GPU in under
8 minutes; on a machine without CUDA the same script runs with CPU sizes, so it is known to work before then.

    python scripts/gpu_check.py [--device DEV] [--dir .dryrun] [--out JSON]

Four parts, each a child process with a time limit, each run whatever the previous ones gave (on CUDA all four
share a 470 s budget; a part the budget no longer allows is reported as not run):
  1. gpu_tests: ``pytest -m gpu`` (the fast path's bf16 + torch.compile agreement; skipped without CUDA);
  2. dry_run: scripts/dry_run.py, the paper's protocol end to end on stand-in weights (its gpu or cpu profile);
  3. perf_reference and 4. perf_fast: ``dogbench perf`` on DiT-XL/2 at 256x256, one run per path so that a slow
     torch.compile cannot cost the reference numbers (CPU: DiT-S/2 at 64x64, the reference path only).
Writes ONE JSON, results/perf/gpu-check-<device>-<time>.json: the device, each part's command, wall time, limit,
pass/fail and details (test counts; the perf rows; the dry run's summary with its wall time and peak memory), plus
the perf rows as a dogbench perf record beside it (perf-<device>-<time>.json). Exits 1 when a part failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmark.io import atomic_write_json, results_root  # noqa: E402
from benchmark.perf import device_name, paper_protocol_hours  # noqa: E402

# dogbench perf's sizes: the paper's model on a GPU; each path is its own run, so that a slow torch.compile of the
# fast path cannot cost the reference numbers
PERF_ARGS = {
    "cuda": ["--model", "DiT-XL/2", "--image-size", "256", "--batch-size", "64", "--train-batch-size", "16",
             "--train-steps", "5", "--feature-images", "512", "--repeat", "2"],
    "cpu": ["--model", "DiT-S/2", "--image-size", "64", "--batch-size", "2", "--train-batch-size", "2",
            "--train-steps", "1", "--feature-images", "2", "--repeat", "1"],
}
PERF_PATHS = {"cuda": ("reference", "fast"), "cpu": ("reference",)}
# seconds: the most each part may take, and what all of them together may take (None: no total)
CAPS_S = {"cuda": {"gpu_tests": 90, "dry_run": 270, "perf_reference": 90, "perf_fast": 150},
          "cpu": {"gpu_tests": 300, "dry_run": 1500, "perf_reference": 600, "perf_fast": 600}}
TOTAL_S = {"cuda": 470, "cpu": None}


def run_part(command: list[str], limit_s: float, log_path: Path) -> tuple[int, float]:
    """(return code, or 124 when it ran past ``limit_s``; wall seconds); its output goes to ``log_path``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    print(f"gpu-check: {' '.join(command)}  (limit {limit_s:.0f} s)", flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            rc = process.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the part and any process it started
            process.wait()
            rc = 124
    wall = time.perf_counter() - start
    print(f"gpu-check: exit {rc} after {wall:.0f} s", flush=True)
    return rc, round(wall, 1)


def pytest_counts(output: str) -> dict[str, int]:
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)}


def part_commands(kind: str, device: str, root: Path, tmp: Path) -> dict[str, list[str]]:
    commands = {
        "gpu_tests": [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
        "dry_run": [sys.executable, str(REPO / "scripts" / "dry_run.py"), "--profile", "gpu" if kind == "cuda" else "cpu",
                    "--device", device, "--dir", str(root), "--fresh", "--json", str(tmp / "dry_run.json")],
    }
    for path in PERF_PATHS[kind]:
        commands[f"perf_{path}"] = [sys.executable, "-m", "benchmark.cli", "perf", "--device", device,
                                    *PERF_ARGS[kind], "--paths", path, "--out", str(tmp / f"perf_{path}.json")]
    return commands


def judge(name: str, kind: str, rc: int, tmp: Path) -> dict:
    """Pass/fail and the details of one finished part."""
    log = (tmp / f"{name}.log").read_text(errors="replace")
    if name == "gpu_tests":
        counts = pytest_counts(log[-2000:])
        return {"passed": rc == 0 and (kind == "cpu" or counts.get("passed", 0) > 0), "counts": counts,
                "note": "skipped: no CUDA device" if kind == "cpu" else None}
    path = tmp / f"{name}.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if name == "dry_run":
        return {"passed": rc == 0 and bool(data.get("passed")), "summary": data}
    return {"passed": rc == 0 and bool(data.get("rows")), "rows": data.get("rows", []), "record": data}


def gpu_check(device: str, root: Path, tmp: Path) -> dict:
    kind = "cuda" if device.startswith("cuda") else "cpu"
    caps, total = CAPS_S[kind], TOTAL_S[kind]
    start = time.perf_counter()
    parts = {}
    for name, command in part_commands(kind, device, root, tmp).items():
        left = None if total is None else total - (time.perf_counter() - start)
        limit = caps[name] if left is None else min(caps[name], left)
        if limit < 10:
            parts[name] = {"passed": False, "returncode": None, "wall_s": 0.0, "command": " ".join(command[1:]),
                           "note": f"not run: the {total} s budget was spent"}
            continue
        rc, wall = run_part(command, limit, tmp / f"{name}.log")
        parts[name] = {"returncode": rc, "wall_s": wall, "limit_s": round(limit), "command": " ".join(command[1:]),
                       **judge(name, kind, rc, tmp)}
        if not parts[name]["passed"]:
            parts[name]["output_tail"] = (tmp / f"{name}.log").read_text(errors="replace")[-3000:]
    return parts


def perf_record(parts: dict) -> dict:
    """One perf record (dogbench perf's format) of the paths measured: rows of both, the estimate from both."""
    records = [parts[name].pop("record") for name in ("perf_reference", "perf_fast") if parts.get(name, {}).get("record")]
    if not records:
        return {}
    rows = [row for record in records for row in record["rows"]]
    settings = {**records[0]["settings"], "paths": [p for r in records for p in r["settings"]["paths"]]}
    return {**records[0], "settings": settings, "rows": rows, "paper_protocol_device_hours": paper_protocol_hours(rows)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dir", default=str(REPO / ".dryrun"), help="stand-ins and dry-run results (default: .dryrun)")
    p.add_argument("--out", default=None, help="the JSON (default: results/perf/gpu-check-<device>-<time>.json)")
    args = p.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = device_name(torch.device(device))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        parts = gpu_check(device, Path(args.dir).resolve(), Path(tmp))
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()[:40]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else results_root() / "perf" / f"gpu-check-{slug}-{stamp}.json"
    record = perf_record(parts)
    if record:  # beside the check, under dogbench perf's own naming (results/perf/README.md lists these)
        record_path = out.with_name(f"perf-{slug}-{stamp}.json")
        atomic_write_json(record_path, record)
        for part in ("perf_reference", "perf_fast"):
            if part in parts:
                parts[part]["record_path"] = str(record_path)
    result = {"device": name, "device_arg": device, "torch": torch.__version__,
              "cuda": torch.version.cuda, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "wall_s": round(time.perf_counter() - start, 1), "perf_record": str(record_path) if record else None,
              "paper_protocol_device_hours": record.get("paper_protocol_device_hours"),
              "passed": all(part["passed"] for part in parts.values()), "parts": parts}
    atomic_write_json(out, result)
    for part_name, part in parts.items():
        print(f"gpu-check: {part_name:<10} {'PASS' if part['passed'] else 'FAIL'}  {part['wall_s']:>7.1f} s")
    print(f"gpu-check: {'PASS' if result['passed'] else 'FAIL'} in {result['wall_s']:.0f} s on {name}; wrote {out}"
          + (f" and {record_path}" if record else ""))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
