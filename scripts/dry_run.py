"""The paper's protocol end to end on stand-in weights, at a size that finishes in minutes: `make dry-run`.

    python scripts/dry_run.py [--profile auto|cpu|cpu-xl|gpu] [--dir .dryrun] [--device DEV] [--json PATH]
                              [--exp paper|paper-lora] [KEY=VALUE ...]

Writes the stand-ins (benchmark.standins: random weights of the real architectures, a small Caltech-101-layout
folder of real images) once, then runs ``dogbench run --exp paper`` (or ``--exp paper-lora``) on them with small
overrides, in a child process whose wall time and peak resident memory it measures, and checks what the run must
have produced: the VAE latent cache, the fine-tune's EMA export, sample sets of none, CFG and DoG, FID and FD_DINOv2
in runs.csv, the leaderboard, PROTOCOL.md and offline W&B runs. Prints one JSON summary (and writes it with --json); exits 1 when a check fails.

Profiles (``auto``: gpu when CUDA is available, else cpu). All three run the SD-VAE architecture, the FID Inception,
DINOv2 ViT-L/14 and a source and a fine-tuned DiT through the paper's code; they differ in the DiT and the size:
  gpu     DiT-XL/2 at 256x256 from the file named like the release: exactly the paper's architectures;
  cpu     DiT-B/2 at 64x64 pixels (8x8x4 latents): on 2 CPU cores one DiT-XL/2 forward at 256 takes ~6 s per image
          and one SD-VAE decode ~16 s per image, and the in-process harness holds a DiT-XL/2 fine-tune's ~14 GB
          while it samples and scores (README, "Host memory");
  cpu-xl  DiT-XL/2 at 64x64: the paper's model on a CPU host with more than 24 GB of memory.
Extra KEY=VALUE arguments override the profile.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing it

from benchmark.standins import experiment_overrides, write_standins  # noqa: E402

NAME = "paper-dry-run"
SMALL = ["finetune.steps=2", "finetune.global_batch_size=2", "finetune.checkpoint_every=2", "finetune.num_workers=0",
         "sampling.num_samples=4", "sampling.steps=2", "sampling.batch_size=4", "selection.num_samples=4",
         "w_grid=[1.0,1.5]", "report.seeds=[1]", "report.fixed_w=[]", "report.bootstrap=10", "evaluation.batch_size=4"]
PROFILES = {
    # the size of the stand-ins, and the overrides of experiments/paper.yaml
    "cpu": dict(model="DiT-B/2", image_size=64, classes=2, per_class=4, overrides=SMALL),
    "cpu-xl": dict(model="DiT-XL/2", image_size=64, classes=2, per_class=4, overrides=SMALL),
    "gpu": dict(model="DiT-XL/2", image_size=256, classes=4, per_class=12, overrides=[
        "finetune.steps=10", "finetune.global_batch_size=8", "finetune.checkpoint_every=10", "finetune.num_workers=2",
        "sampling.num_samples=16", "sampling.steps=10", "sampling.batch_size=16", "selection.num_samples=16",
        "w_grid=[1.0,1.5]", "report.seeds=[1]", "report.fixed_w=[1.5]", "report.bootstrap=10",
        "evaluation.batch_size=16",
        "sampling.compile=false"]),  # compiling XL/2 takes minutes; gpu-check's perf_fast and pytest -m gpu cover it
}


def run_measured(command: list[str], **popen) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak resident set in GiB) of ``command``: the peak is that of the largest process
    of its tree (Linux reports it in KiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, **popen)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - start, usage.ru_maxrss / 2**20


def check_outputs(results: Path) -> dict[str, bool]:
    """What a complete run of the protocol leaves in ``results`` (results/<name>/ and the shared cache)."""
    runs = pd.read_csv(results / "runs.csv") if (results / "runs.csv").is_file() else pd.DataFrame()
    board = pd.read_csv(results / "leaderboard.csv") if (results / "leaderboard.csv").is_file() else pd.DataFrame()
    finite = lambda column: column in runs and bool(runs[column].notna().all())  # noqa: E731
    return {
        "latents": any((results.parent / "cache" / "latents").glob("*/*")),
        "finetune": any(results.glob("caltech101/finetune-*/ema.pt")),
        "samples_none_cfg_dog": all(any(results.glob(f"caltech101/samples/{m}-w*")) for m in ("none", "cfg", "dog")),
        "fid": finite("fid"),
        "fd_dinov2": finite("fd_dinov2"),
        "leaderboard": not board.empty and {"none", "cfg", "dog"} <= set(board.get("method", [])),
        "protocol": (results / "PROTOCOL.md").is_file(),
        "wandb_offline": any((results / "wandb").glob("offline-run-*")),
    }


def dry_run(profile: str, root: Path, device: str | None = None, extra: list[str] = (), log=print,
            experiment: str = "paper") -> dict:
    """Write the stand-ins under ``root``, run the protocol on them into ``root/results``; the summary dict."""
    spec = PROFILES[profile]
    standins = root / "standins"  # one folder for every profile: only the DiT file differs between them
    t0 = time.perf_counter()
    paths = write_standins(standins, spec["model"], spec["image_size"], spec["classes"], spec["per_class"], log=log)
    standins_s = time.perf_counter() - t0
    results_root = root / "results"
    overrides = [f"name={NAME}", *experiment_overrides(paths, spec["model"], spec["image_size"]),
                 "tracking.wandb.mode=offline", *spec["overrides"], *extra]
    command = [sys.executable, "-m", "benchmark.cli", "run", "--exp", experiment, "--results-root", str(results_root),
               "--no-progress", *(["--device", device] if device else []), *overrides]
    log("dry run: " + " ".join(command[1:]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "WANDB_SILENT": "true"}
    rc, wall, peak = run_measured(command, cwd=REPO, env=env)
    checks = check_outputs(results_root / NAME)
    return {"profile": profile, "model": spec["model"], "image_size": spec["image_size"], "returncode": rc,
            "wall_s": round(wall, 1), "standins_s": round(standins_s, 1), "peak_rss_gib": round(peak, 2),
            "checks": checks, "passed": rc == 0 and all(checks.values()), "results": str(results_root / NAME),
            "command": " ".join(command[1:])}


def auto_profile() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="auto", choices=("auto", *PROFILES),
                   help="sizes: gpu (DiT-XL/2, 256 px), cpu (DiT-B/2, 64 px), cpu-xl (DiT-XL/2, 64 px); default: auto")
    p.add_argument("--dir", default=str(REPO / ".dryrun"), help="stand-ins and results go here (default: .dryrun)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--json", default=None, help="also write the summary here")
    p.add_argument("--exp", default="paper", help="the protocol run on the stand-ins: paper, or a file based on it "
                                                  "such as paper-lora (default: paper)")
    p.add_argument("--fresh", action="store_true", help="delete the previous dry run's results first (stand-ins stay)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more experiment overrides")
    args = p.parse_args(argv)
    root = Path(args.dir).resolve()
    if args.fresh:
        import shutil

        shutil.rmtree(root / "results", ignore_errors=True)
    profile = auto_profile() if args.profile == "auto" else args.profile
    summary = dry_run(profile, root, args.device, args.overrides, experiment=args.exp)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
