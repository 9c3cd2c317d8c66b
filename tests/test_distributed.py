"""Several processes on one experiment, as on a multi-GPU machine, here with gloo on CPU: the whole pipeline from
scratch (the fine-tune not done yet) under torchrun with 2 and 3 processes gives the leaderboard of one process; a
process that Lightning re-launched (WORLD_SIZE and LOCAL_RANK, no RANK) finds its rank; a rank killed mid-stage and
a rerun finish the same."""
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from benchmark.distributed import env_ranks
from boards import comparable_board
from conftest import REPO, run_if

pytestmark = [run_if(shared_data="caltech101/caltech101_32.npz")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}


@pytest.fixture
def experiment(tiny_experiment):
    """The tiny experiment with a global batch that 1, 2 and 3 processes split evenly."""
    path, results = tiny_experiment
    config = yaml.safe_load(path.read_text())
    config["finetune"]["global_batch_size"] = 6
    config["tracking"]["wandb"]["enabled"] = False
    path.write_text(yaml.safe_dump(config))
    return path, results


def run_cmd(path, results):
    return ["-m", "benchmark.cli", "run", "--exp", str(path), "--results-root", str(results), "--no-progress"]


def torchrun(n, path, results, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
                             "--master-port", str(free_port()), *run_cmd(path, results)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single(path, results):
    done = subprocess.run([sys.executable, *run_cmd(path, results)], env=ENV, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return comparable_board(results / "tiny" / "leaderboard.csv")


def assert_same_board(board, reference):
    assert list(board.columns) == list(reference.columns)
    pd.testing.assert_frame_equal(board, reference, rtol=1e-6)


@pytest.mark.slow  # four pipelines, three of them multi-process
def test_two_and_three_processes_give_the_leaderboard_of_one(experiment, tmp_path):
    path, _ = experiment
    reference = single(path, tmp_path / "one")
    for n in (2, 3):
        proc = torchrun(n, path, tmp_path / f"n{n}")
        out = proc.communicate(timeout=900)[0]
        assert proc.returncode == 0, out[-4000:]
        assert_same_board(comparable_board(tmp_path / f"n{n}" / "tiny" / "leaderboard.csv"), reference)
        assert out.count("leaderboard (") == 1  # one report, written by rank 0
        runs = pd.read_csv(tmp_path / f"n{n}" / "tiny" / "runs.csv")
        assert not runs.duplicated(["dataset", "phase", "method", "w", "seed"]).any()


def test_rank_of_a_process_lightning_relaunched(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert env_ranks() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's child: no RANK of its own
    assert env_ranks() == (1, 2, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert env_ranks() == (3, 4, 1)
    monkeypatch.setenv("RANK", "2")  # torchrun's RANK wins
    assert env_ranks() == (2, 4, 1)


@pytest.mark.slow
def test_processes_started_as_lightning_starts_them(experiment, tmp_path):
    """Two `dogbench run` processes with Lightning's child environment (no RANK): one process group, one report."""
    path, _ = experiment
    reference = single(path, tmp_path / "one")
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, *run_cmd(path, tmp_path / "two")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**ENV, "WORLD_SIZE": "2", "LOCAL_RANK": str(r), "NODE_RANK": "0",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in (0, 1)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n----\n".join(o[-3000:] for o in outs)
    assert_same_board(comparable_board(tmp_path / "two" / "tiny" / "leaderboard.csv"), reference)


@pytest.mark.slow
def test_a_rank_killed_mid_stage_then_a_rerun(experiment, tmp_path):
    path, _ = experiment
    reference = single(path, tmp_path / "one")
    results = tmp_path / "killed"
    proc = torchrun(2, path, results, start_new_session=True)
    samples = results / "tiny" / "folder" / "samples"
    deadline = time.monotonic() + 600
    while not list(samples.rglob("*.png")):  # mid-sampling: the fine-tune is done, some images are written
        assert proc.poll() is None and time.monotonic() < deadline, "the run never reached sampling"
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.kill(int(workers[-1]), signal.SIGKILL)  # one rank dies; torchrun stops the other
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    again = torchrun(2, path, results)
    out = again.communicate(timeout=900)[0]
    assert again.returncode == 0, out[-4000:]
    assert "already done" in out  # the fine-tune is not redone
    assert_same_board(comparable_board(results / "tiny" / "leaderboard.csv"), reference)


def _last_to_arrive_writes_first(rank, init_file, marker):
    import torch.distributed as dist
    from benchmark.distributed import main_writes
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        if rank == 1:  # the slow rank: its share lands well after rank 0 reached the block
            time.sleep(1.0)
            marker.write_text("rank 1's share")
        with main_writes() as mine:
            if mine:
                assert marker.exists(), "rank 0 wrote its summary before rank 1's share was on disk"
    finally:
        dist.destroy_process_group()


def test_main_writes_waits_for_every_rank_before_rank_0_writes(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_last_to_arrive_writes_first, args=(tmp_path / "init", tmp_path / "share"), nprocs=2)
