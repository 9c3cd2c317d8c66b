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
