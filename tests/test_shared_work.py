"""Several `dogbench run` processes on one results folder share the work (one claim per unit: nothing is done
twice, and a dead process's claim is taken over), and `dogbench run` killed at random points in every stage then
rerun finishes with the leaderboard of an uninterrupted run, byte for byte."""
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from benchmark.claims import read_claim, share, try_claim
from boards import comparable_board
from conftest import REPO, run_if

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
needs_data = run_if(shared_data="caltech101/caltech101_32.npz")


def command(path, results):
    return [sys.executable, "-m", "benchmark.cli", "run", "--exp", str(path), "--results-root", str(results),
            "--no-progress"]


def test_a_claim_of_a_dead_process_is_taken_over(tmp_path):
    unit = tmp_path / "unit"
    assert try_claim(tmp_path / "unit.claim")
    assert not try_claim(tmp_path / "unit.claim")  # held by this living process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "unit.claim").write_text(f'{{"host": "{os.uname().nodename}", "pid": {dead.stdout.strip()}}}')
    assert try_claim(tmp_path / "unit.claim")  # its owner is gone: taken over
    assert read_claim(tmp_path / "unit.claim")["pid"] == os.getpid()
    old = time.time() - 3600
    os.utime(tmp_path / "unit.claim", (old, old))  # a silent owner on another machine: stale by its heartbeat
    assert try_claim(tmp_path / "unit.claim", stale_s=60)
    assert unit.name == "unit"


def test_share_takes_free_units_first_and_comes_back_to_held_ones():
    held = {"b": 2}  # b is held by another process for two more attempts
    order = []

    def attempt(unit):
        if held.get(unit, 0):
            held[unit] -= 1
            return None
        order.append(unit)
        return unit.upper()

    assert share(["a", "b", "c"], attempt, poll_s=0.01) == ["A", "B", "C"]
    assert order == ["a", "c", "b"]


@pytest.mark.slow  # three runs of the pipeline, then five at once
@needs_data
def test_two_and_three_processes_share_the_work(tiny_experiment, tmp_path):
    path, _ = tiny_experiment
    start = time.perf_counter()
    subprocess.run(command(path, tmp_path / "one"), env=ENV, check=True, capture_output=True, timeout=900)
    alone = time.perf_counter() - start
    reference = comparable_board(tmp_path / "one" / "tiny" / "leaderboard.csv")
    for n in (2, 3):
        results = tmp_path / f"n{n}"
        start = time.perf_counter()
        procs = [subprocess.Popen(command(path, results), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(n)]
        outputs = [p.communicate(timeout=900)[0] for p in procs]
        together = time.perf_counter() - start
        assert all(p.returncode == 0 for p in procs), "\n----\n".join(outputs)
        sampled = Counter(m for out in outputs for m in re.findall(r": sampling (.+ seed=\d+) \(", out))
        assert sampled and max(sampled.values()) == 1, sampled  # no sample set made twice
        assert sum("fine-tuning" in out for out in outputs) == 1  # one fine-tune, the others waited for it
        assert sum(bool(re.search(r": sampling ", out)) for out in outputs) >= 2  # the work was split
        board = comparable_board(results / "tiny" / "leaderboard.csv")
        pd.testing.assert_frame_equal(board, reference, check_exact=True)
        print(f"\n{n} processes: {together:.1f} s for what one process did in {alone:.1f} s; sample sets by process: "
              f"{[len(re.findall(r': sampling ', out)) for out in outputs]}")


@pytest.mark.slow  # an uninterrupted run, then at least ten kills and a last run
@needs_data
def test_killed_at_random_points_in_every_stage_then_finished(tiny_experiment, tmp_path):
    path, _ = tiny_experiment
    start = time.perf_counter()
    subprocess.run(command(path, tmp_path / "straight"), env=ENV, check=True, capture_output=True, timeout=900)
    duration = time.perf_counter() - start
    reference = comparable_board(tmp_path / "straight" / "tiny" / "leaderboard.csv")
    results = tmp_path / "killed"
    marker = results / "tiny" / "config.yaml"  # written once a run has imported everything and starts working
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(12):  # each run resumes and gets a little further: the kills fall in every stage in turn
        started = time.time()
        proc = subprocess.Popen(command(path, results), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and not (marker.exists() and marker.stat().st_mtime >= started):
            time.sleep(0.05)
        try:
            proc.wait(timeout=rng.uniform(0.02, 0.12) * duration)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 10
    subprocess.run(command(path, results), env=ENV, check=True, capture_output=True, timeout=900)
    pd.testing.assert_frame_equal(comparable_board(results / "tiny" / "leaderboard.csv"), reference, check_exact=True)
    assert not list(results.rglob("*.claim"))  # every claim released or taken over
