"""`dogbench sweep` on a real PostgreSQL storage: four worker processes share one study, one is killed mid-trial, and
the heartbeat fails its trial and retries its w; an unreachable server fails in one line before any work."""
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import sqlalchemy

from benchmark.cli import main
from benchmark.errors import ConfigError
from benchmark.harness.storage import check_storage_url
from conftest import run_if
from postgres_server import free_port

pytestmark = pytest.mark.usefixtures("one_thread")
needs_images = run_if(shared_data="caltech101/caltech101_32.npz")  # the tiny experiment's target domain

STUDY = "tiny/folder/dog/fd_effnet"
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def beating_trial_of(storage, pid: int):
    """The RUNNING trial of the worker process ``pid`` once its heartbeat is recorded (None before). Optuna never
    fails a trial without a heartbeat (its first one is written by a thread, just after the trial starts)."""
    try:
        study = optuna.load_study(study_name=STUDY, storage=storage)
    except KeyError:  # not created yet
        return None
    trial = next((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                  if t.user_attrs.get("worker", "").endswith(f":{pid}")), None)
    if trial is None:
        return None
    with storage.engine.connect() as db:  # Optuna's own table: no public API tells whether a trial has beaten
        beats = db.execute(sqlalchemy.text("SELECT count(*) FROM trial_heartbeats WHERE trial_id = :id"),
                           {"id": trial._trial_id}).scalar()
    return trial if beats else None


@pytest.mark.slow  # four processes and a database server
@run_if(postgres=True)
@needs_images
def test_four_workers_on_postgres_survive_a_killed_worker(tiny_experiment, postgres_url):
    path, results = tiny_experiment
    assert main(["run", "--exp", str(path), "--results-root", str(results), "--no-progress",
                 "--stages", "prepare,finetune"]) == 0  # one fine-tune, before the workers start
    storage = optuna.storages.RDBStorage(postgres_url)  # the schema, made once before the workers race for it
    trials = 4
    cmd = [sys.executable, "-m", "benchmark.cli", "sweep", "--exp", str(path), "--dataset", "folder", "--method", "dog",
           "--total-trials", str(trials), "--storage", postgres_url, "--results-root", str(results), "--no-progress",
           "sweep.low_fidelity_samples=3", "sweep.heartbeat_s=3"]  # a dead worker's trial is stale after 6 s
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    workers = [subprocess.Popen(cmd + ["--worker", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for i in range(4)]
    victim = workers[0]
    try:
        deadline = time.monotonic() + 120
        while (killed := beating_trial_of(storage, victim.pid)) is None:
            assert victim.poll() is None and time.monotonic() < deadline, "worker 0 never ran a trial"
            time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)  # mid-trial: its trial stays RUNNING, its heartbeat stops
        outputs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert victim.returncode == -signal.SIGKILL
    assert all(w.returncode == 0 for w in workers[1:]), "\n----\n".join(outputs)

    study = optuna.load_study(study_name=STUDY, storage=storage)
    by_number = {t.number: t for t in study.trials}
    states = [t.state for t in study.trials]
    assert set(states) <= {*DONE, optuna.trial.TrialState.FAIL}, states  # none lost RUNNING or left WAITING
    assert by_number[killed.number].state == optuna.trial.TrialState.FAIL  # failed by the heartbeat...
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state in DONE  # ...and its w taken over by a live worker
    assert retries[0].params["w"] == by_number[killed.number].params["w"] and retries[0].user_attrs["worker"] != killed.user_attrs["worker"]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert trials <= sum(s in DONE for s in states) <= trials + 4  # the budget, overshot by workers still running
    folder = results / "tiny" / "sweeps" / "folder-dog-fd_effnet"  # the study's own results, apart from the grid's
    runs = pd.read_csv(folder / "runs.csv")
    complete_w = {round(t.params["w"], 4) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    trials_rows = runs[(runs["study"] == STUDY) & (runs["phase"] == "selection")]
    assert set(trials_rows["w"]) == complete_w  # every finished trial has its row
    summary = pd.read_csv(folder.parent / "summary.csv")
    assert summary.loc[0, "best_w"] == round(study.best_params["w"], 4)


@needs_images
def test_unreachable_postgres_fails_in_one_line_before_any_work(tiny_experiment, capsys):
    path, results = tiny_experiment
    url = f"postgresql://dogbench:secret@127.0.0.1:{free_port()}/sweeps"  # nothing listens there
    started = time.monotonic()
    assert main(["sweep", "--exp", str(path), "--results-root", str(results), "--dataset", "folder",
                 "--storage", url]) == 1
    assert time.monotonic() - started < 30
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "cannot connect to sweep.storage" in errors[0] and "secret" not in errors[0], errors
    assert not (results / "tiny").exists()  # no data prepared, no fine-tune started
    # the same URL in the experiment's sweep.storage fails when the experiment is loaded
    assert main(["sweep", "--exp", str(path), "--results-root", str(results), "--dataset", "folder",
                 f"sweep.storage={url}"]) == 1
    assert "cannot connect to sweep.storage" in capsys.readouterr().err and not (results / "tiny").exists()


def test_missing_driver_names_its_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(ConfigError, match=r"driver 'psycopg': pip install 'psycopg\[binary\]'"):
        check_storage_url("postgresql://u@127.0.0.1:1/x")
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(ConfigError, match="driver 'psycopg2': pip install psycopg2-binary"):
        check_storage_url("postgresql+psycopg2://u@127.0.0.1:1/x")
