"""W&B tracking: offline by default without credentials, files really written, and never a failed run."""
import json

import numpy as np
import pandas as pd
import pytest

from benchmark import tracking as wandb_mode
from benchmark.harness import plots
from benchmark.harness import wandb_log as tracking
from benchmark.harness.loading import load_experiment
from benchmark.harness.protocol import protocol_table
from benchmark.harness.runs import runs_frame
from wandb_records import read_runs


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))


def test_mode_resolution(no_credentials, tmp_path, monkeypatch, capsys):
    assert wandb_mode.resolve_mode("auto") == "offline"
    assert wandb_mode.resolve_mode("auto", enabled=False) == "disabled"
    assert wandb_mode.resolve_mode("disabled") == "disabled"
    assert wandb_mode.resolve_mode("online") == "offline"  # would prompt for a login; offline instead, with a warning
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode.resolve_mode("auto") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_mode.has_wandb_credentials() and wandb_mode.resolve_mode("auto") == "online"
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode.resolve_mode("auto") == "online"


def test_disabled_is_a_no_op(no_credentials, tmp_path):
    exp = load_experiment("default", ["tracking.wandb.enabled=false"])
    tracker = tracking.make_tracker(exp, results_root=tmp_path)
    assert isinstance(tracker, tracking.NullTracker) and not tracker.enabled
    with tracker:
        tracker.log_run("cub100-32", "dog", 1.5, {"fd_effnet": 1.0})
        tracker.log_summary(pd.DataFrame([{"dataset": "a", "method": "none", "w": 1.0, "fid": 1.0}]))
    assert not (tmp_path / "default").exists()


def test_offline_run_writes_metrics_images_and_the_leaderboard_table(no_credentials, tmp_path, capsys):
    exp = load_experiment("default", ["datasets=[cub100-32]"])
    rows = [
        {"dataset": "cub100-32", "phase": "selection", "method": "none", "w": 1.0, "seed": 0, "fd_effnet": 10.0},
        {"dataset": "cub100-32", "phase": "selection", "method": "cfg", "w": 1.5, "seed": 0, "fd_effnet": 9.0},
        {"dataset": "cub100-32", "phase": "selection", "method": "dog", "w": 1.5, "seed": 0, "fd_effnet": 7.5},
    ]
    grid = plots.save_image_grid(np.zeros((4, 8, 8, 3), np.uint8) + 128, tmp_path / "grid.png")
    board = pd.DataFrame([
        {"dataset": "cub100-32", "method": "cfg", "rule": "best w", "w": 1.5, "fd_effnet": 9.0},
        {"dataset": "cub100-32", "method": "dog", "rule": "best w", "w": 1.5, "fd_effnet": 7.5,
         "fd_effnet_improvement_vs_cfg_pct": (9.0 - 7.5) / 9.0 * 100}])

    tracker = tracking.make_tracker(exp, results_root=tmp_path)
    assert isinstance(tracker, tracking.WandbTracker) and tracker.mode == "offline"
    with tracker:
        tracker.log_run("cub100-32", "dog", 1.5, {"fd_effnet": 7.5}, images={"grid": grid})
        tracker.log_summary(board, runs=runs_frame(rows), figures={"fd_effnet_vs_w": grid},
                            protocol=protocol_table(exp))
    assert tracker.enabled, capsys.readouterr().err  # nothing failed
    assert "wandb sync" in capsys.readouterr().err

    wandb_dir = tmp_path / "default" / "wandb"
    run_dirs = sorted(wandb_dir.glob("offline-run-*"))
    assert len(run_dirs) == 2
    assert all(list(d.glob("run-*.wandb")) for d in run_dirs)
    tables = list(wandb_dir.glob("offline-run-*/files/media/table/leaderboard_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:3] == ["dataset", "method", "rule"]
    assert list(wandb_dir.glob("offline-run-*/files/media/table/protocol_*.table.json"))
    dog = [r for r in table["data"] if r[0] == "cub100-32" and r[1] == "dog"][0]
    col = table["columns"].index("fd_effnet_improvement_vs_cfg_pct")
    assert dog[col] == pytest.approx((9.0 - 7.5) / 9.0 * 100)
    assert list(wandb_dir.glob("offline-run-*/files/media/table/fd_effnet_vs_w/*.table.json"))  # the line chart
    images = sorted(p.parent.name for p in wandb_dir.glob("offline-run-*/files/media/images/**/*.png"))
    assert images == ["figures", "samples"]  # the figure (summary run) and the sample grid (point run)


def test_wandb_failure_is_one_warning_line(no_credentials, tmp_path, monkeypatch, capsys):
    import wandb

    def broken_init(**kwargs):
        raise RuntimeError("service crashed\ntraceback lines")

    monkeypatch.setattr(wandb, "init", broken_init)
    tracker = tracking.WandbTracker("exp", {"a": 1}, mode="offline", directory=tmp_path)
    tracker.log_run("a", "cfg", 2.0, {"fid": 1.0})  # must not raise
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "service crashed" in err and "continuing without W&B" in err
    assert not tracker.enabled
    tracker.log_run("a", "dog", 2.0, {"fid": 1.0})  # disabled now: silent, no new attempt
    tracker.finish()
    assert capsys.readouterr().err == ""


def test_run_names():
    assert tracking.run_name("cub100-32", "dog", 1.5) == "cub100-32-dog-w1.5"
    assert tracking.run_name("cub100-32", "none", 1.0, seed=2) == "cub100-32-none-w1-s2"
    assert tracking.run_name("cub100-32", "real", float("nan"), seed=1) == "cub100-32-real-s1"  # no w
    assert wandb_mode.tag("w", 1.5) == "w:1.5" and wandb_mode.tag("w", 2.0) == "w:2" and wandb_mode.tag("seed", 0) == "seed:0"
    assert len(wandb_mode.tag("dataset", "x" * 100)) == 64  # W&B refuses longer tags


def test_tables_get_one_type_per_column():
    """A runs table merged from CSV rows and fresh rows can mix ints, floats and strings in a column."""
    import pandas as pd

    from benchmark.harness.wandb_log import _plain

    df = pd.DataFrame({"n": pd.Series([500, 500.0, None], dtype=object), "sha": ["", None, "abc"],
                       "seeds": pd.array([3, None, 1], dtype="Int64")})
    plain = _plain(df)
    assert plain["n"].tolist() == [500.0, 500.0, None] and plain["sha"].tolist() == ["", None, "abc"]
    assert plain["seeds"].tolist() == [3.0, None, 1.0]
    import wandb

    wandb.Table(dataframe=plain)  # accepted


def small_board_and_runs():
    rows = [
        {"dataset": "cub100-32", "phase": "selection", "method": "none", "w": 1.0, "seed": 0, "fd_effnet": 10.0},
        {"dataset": "cub100-32", "phase": "selection", "method": "cfg", "w": 1.5, "seed": 0, "fd_effnet": 9.0},
        {"dataset": "cub100-32", "phase": "selection", "method": "dog", "w": 1.5, "seed": 0, "fd_effnet": 7.5},
    ]
    board = pd.DataFrame([{"dataset": "cub100-32", "method": "dog", "rule": "best w", "w": 1.5, "fd_effnet": 7.5}])
    return board, runs_frame(rows)


def test_runs_are_grouped_tagged_and_fully_configured(no_credentials, tmp_path):
    exp = load_experiment("default", ["datasets=[cub100-32]", "selection.seeds=[0]", "report.seeds=[1,2]"])
    grid = plots.save_image_grid(np.zeros((4, 8, 8, 3), np.uint8) + 128, tmp_path / "grid.png")
    board, runs = small_board_and_runs()
    with tracking.make_tracker(exp, results_root=tmp_path) as tracker:
        tracker.log_run("cub100-32", "dog", 1.5, {"fd_effnet": 7.5}, seed=1, images={"grid": grid}, phase="report",
                        num_samples=500, stage_hash="0123456789ab")
        tracker.log_summary(board, runs, protocol=protocol_table(exp))
    assert tracker.enabled
    sample_set, report = read_runs(tmp_path / "default")
    assert sample_set["group"] == report["group"] == "default"
    assert sample_set["job_type"] == "evaluate" and report["job_type"] == "report"
    assert set(sample_set["tags"]) == {"dataset:cub100-32", "method:dog", "w:1.5", "seed:1", "phase:report"}
    config = sample_set["config"]
    assert {k: config[k] for k in ("experiment", "dataset", "method", "w", "seed", "phase", "num_samples",
                                   "stage_hash")} == {
        "experiment": "default", "dataset": "cub100-32", "method": "dog", "w": 1.5, "seed": 1, "phase": "report",
        "num_samples": 500, "stage_hash": "0123456789ab"}
    assert config["experiment_config"]["sampling"]["steps"] == exp.sampling.steps
    (row,) = sample_set["history"]
    assert row["fd_effnet"] == 7.5 and row["samples/grid"]["_type"] == "image-file"
    assert row["sample_set"]["_type"] == "table-file"
    (table,) = sample_set["folder"].glob("files/media/table/sample_set_*.table.json")
    table = json.loads(table.read_text())
    assert table["columns"] == ["dataset", "phase", "method", "w", "seed", "num_samples", "fd_effnet", "grid"]
    assert table["data"][0][:7] == ["cub100-32", "report", "dog", 1.5, 1, 500, 7.5]
    assert {"phase:report", "dataset:cub100-32", "method:dog", "method:cfg"} <= set(report["tags"])
    assert report["config"]["selection_seeds"] == [0] and report["config"]["report_seeds"] == [1, 2]
    assert report["config"]["protocol"] and report["config"]["experiment"] == "default"
    assert report["name"] == "default-leaderboard"


def test_a_rerun_updates_the_same_runs(no_credentials, tmp_path, capsys):
    """Each `dogbench run` makes a new tracker: the leaderboard run and a changed sample set's run are updated
    (same run id, next step), an unchanged sample set is not logged again. W&B 0.31 offline writes a new
    offline-run-* folder for each update of a run, so the check is on run ids, not on folders."""
    exp = load_experiment("default", ["datasets=[cub100-32]"])
    board, runs = small_board_and_runs()
    for fd in (8.0, 8.0, 7.0):  # three invocations; the second finds nothing new in the sample set
        with tracking.make_tracker(exp, results_root=tmp_path) as tracker:
            tracker.log_run("cub100-32", "cfg", 2.0, {"fd_effnet": fd}, seed=0, phase="selection", num_samples=50,
                            stage_hash="aaaaaaaaaaaa")
            tracker.log_run("cub100-32", "dog", 2.0, {"fd_effnet": 6.0}, seed=0, phase="selection", num_samples=50,
                            stage_hash="bbbbbbbbbbbb")
            tracker.log_summary(board.assign(fd_effnet=fd), runs)
        assert tracker.enabled, capsys.readouterr().err
    written = read_runs(tmp_path / "default")
    by_id: dict = {}
    for run in written:
        by_id.setdefault(run["id"], []).append(run)
    assert len(by_id) == 3  # one leaderboard run, one run per sample set
    (report,) = [r for r in by_id.values() if r[0]["job_type"] == "report"]
    assert [r["history"][0]["_step"] for r in report] == [0, 1, 2]  # three updates, in order
    assert [r["history"][0]["leaderboard"]["_type"] for r in report] == ["table-file"] * 3
    (changed,) = [r for r in by_id.values() if r[0]["name"] == "cub100-32-cfg-w2-s0"]
    assert [(r["history"][0]["_step"], r["history"][0]["fd_effnet"]) for r in changed] == [(0, 8.0), (1, 7.0)]
    (unchanged,) = [r for r in by_id.values() if r[0]["name"] == "cub100-32-dog-w2-s0"]
    assert len(unchanged) == 1

    # another results directory is another set of runs
    with tracking.make_tracker(exp, results_root=tmp_path / "elsewhere") as tracker:
        tracker.log_summary(board, runs)
    (other,) = read_runs(tmp_path / "elsewhere" / "default")
    assert other["id"] not in by_id


def test_finish_says_how_to_upload_every_offline_run(no_credentials, tmp_path, capsys):
    tracker = tracking.WandbTracker("exp", {}, mode="offline", directory=tmp_path)
    tracker.finish()
    assert capsys.readouterr().err == ""  # nothing to upload
    tracker.log_run("a", "cfg", 2.0, {"fid": 1.0}, seed=0)
    tracker.log_run("a", "dog", 2.0, {"fid": 1.0}, seed=0)
    tracker.finish()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 offline run folder(s)" in err
    assert err.strip().endswith(f"wandb sync {tmp_path / 'wandb'}/offline-run-*")
    for log in (tmp_path / "wandb").glob("offline-run-*/run-*.wandb"):  # what `wandb sync` leaves behind
        (log.parent / f"{log.name}.synced").touch()
    tracker.finish()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("breakage", ["unwritable state", "missing image"])
def test_any_failure_is_one_warning_line(no_credentials, tmp_path, capsys, breakage):
    directory = tmp_path / "results"
    directory.mkdir()
    images = None
    if breakage == "unwritable state":
        (directory / "wandb").write_text("a file where the W&B folder goes")
    else:
        images = {"grid": tmp_path / "gone.png"}
    tracker = tracking.WandbTracker("exp", {}, mode="offline", directory=directory)
    tracker.log_run("a", "cfg", 2.0, {"fid": 1.0}, seed=0, images=images)  # must not raise
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "continuing without W&B" in err and not tracker.enabled
    tracker.log_summary(pd.DataFrame([{"dataset": "a", "fid": 1.0}]))
    assert capsys.readouterr().err == ""


def test_finetune_command_files_its_wandb_run_where_told(tmp_path, monkeypatch):
    from pathlib import Path

    import benchmark.cli.train as train_command
    from benchmark.cli import main
    from benchmark.tracking import WandbRun

    calls = []
    monkeypatch.setattr(train_command, "finetune", lambda source, data, out, *a: calls.append(out))
    base = ["finetune", "--config", "default", "--dataset", "caltech101-32", "--out", str(tmp_path / "o")]
    assert main(base) == 0
    assert main(base + ["--wandb-dir", str(tmp_path / "results" / "default"), "--wandb-group", "default"]) == 0
    assert calls[0].wandb_run == WandbRun()  # the run's own folder, <out>/wandb
    assert calls[1].wandb_run == WandbRun(directory=Path(tmp_path / "results" / "default"), group="default")


def test_report_tags_use_the_names_of_dict_entries(tmp_path, monkeypatch):
    """Your own dataset {name, path} and a method {name, label, params} are tagged by their names, never by the raw
    YAML entry cut at W&B's tag length."""
    (tmp_path / "foodA" / "a").mkdir(parents=True)
    exp = load_experiment("default", [f"datasets=[caltech101-32, {{name: foodA, path: {tmp_path / 'foodA'}}}]",
                                      "methods=[none, {name: dog, label: dog-apg, params: {eta: 0.0}}, "
                                      "{name: 'guidance_plugin:mixed_null'}]"])
    tracker = tracking.WandbTracker(exp.name, exp.to_dict(), directory=tmp_path)
    logged = {}
    monkeypatch.setattr(tracker, "_log", lambda what, data, identity, **kw: logged.update(kw))
    tracker.log_summary(pd.DataFrame(), None, {})
    assert {"dataset:caltech101-32", "dataset:foodA", "method:none", "method:dog-apg",
            "method:guidance_plugin:mixed_null"} <= set(logged["tags"]), logged["tags"]
    assert not [t for t in logged["tags"] if "{" in t], logged["tags"]
