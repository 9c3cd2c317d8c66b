"""runs.csv and leaderboard.csv on hand-made rows, against numbers computed by hand."""
import math

import numpy as np
import pandas as pd
import pytest

from benchmark.harness import leaderboard as lb


def row(dataset, method, w, seed, **metrics):
    return {"dataset": dataset, "method": method, "w": w, "seed": seed, **metrics}


# Dataset A, two seeds (FID):  none 10, 12 -> 11 (std sqrt 2)
#   cfg w1.5: 9, 9 -> 9;    cfg w2.0: 8, 10 -> 9   (a tie: the smaller w, 1.5, wins)
#   dog w1.5: 8, 9 -> 8.5;  dog w2.0: 6, 7 -> 6.5  (best; std sqrt 0.5)
# Dataset B, two seeds: none 20, 20; cfg w1.5 18, 18, w2.0 19, 19; dog w1.5 17, 17, w2.0 15, 15
# Dataset C: none and cfg only (incomplete: left out of the average)
ROWS = [
    row("A", "none", 1.0, 0, fid=10.0), row("A", "none", 1.0, 1, fid=12.0),
    row("A", "cfg", 1.5, 0, fid=9.0), row("A", "cfg", 1.5, 1, fid=9.0),
    row("A", "cfg", 2.0, 0, fid=8.0), row("A", "cfg", 2.0, 1, fid=10.0),
    row("A", "dog", 1.5, 0, fid=8.0), row("A", "dog", 1.5, 1, fid=9.0),
    row("A", "dog", 2.0, 0, fid=6.0), row("A", "dog", 2.0, 1, fid=7.0),
    row("B", "none", 1.0, 0, fid=20.0), row("B", "none", 1.0, 1, fid=20.0),
    row("B", "cfg", 1.5, 0, fid=18.0), row("B", "cfg", 1.5, 1, fid=18.0),
    row("B", "cfg", 2.0, 0, fid=19.0), row("B", "cfg", 2.0, 1, fid=19.0),
    row("B", "dog", 1.5, 0, fid=17.0), row("B", "dog", 1.5, 1, fid=17.0),
    row("B", "dog", 2.0, 0, fid=15.0), row("B", "dog", 2.0, 1, fid=15.0),
    row("C", "none", 1.0, 0, fid=30.0), row("C", "cfg", 2.0, 0, fid=25.0),
]


def get(board, dataset, method):
    hit = board[(board["dataset"] == dataset) & (board["method"] == method)]
    assert len(hit) == 1, (dataset, method)
    return hit.iloc[0]


def test_best_w_mean_std_and_improvements():
    board = lb.build_leaderboard(ROWS, select_by="fid")
    a_none, a_cfg, a_dog = (get(board, "A", m) for m in ("none", "cfg", "dog"))
    assert (a_none["w"], a_none["fid"], a_none["n_seeds"]) == (1.0, 11.0, 2)
    assert a_none["fid_std"] == pytest.approx(math.sqrt(2))
    assert (a_cfg["w"], a_cfg["fid"]) == (1.5, 9.0)  # tie with w = 2.0 -> the smaller w
    assert (a_dog["w"], a_dog["fid"]) == (2.0, 6.5)
    assert a_dog["fid_std"] == pytest.approx(math.sqrt(0.5))
    assert a_dog["fid_improvement_vs_cfg_pct"] == pytest.approx((9 - 6.5) / 9 * 100)    # 27.78
    assert a_dog["fid_improvement_vs_none_pct"] == pytest.approx((11 - 6.5) / 11 * 100)  # 40.91
    assert np.isnan(a_cfg["fid_improvement_vs_cfg_pct"])  # only DoG rows carry improvements

    b_dog = get(board, "B", "dog")
    assert (b_dog["w"], b_dog["fid"], b_dog["fid_std"]) == (2.0, 15.0, 0.0)
    assert b_dog["fid_improvement_vs_cfg_pct"] == pytest.approx((18 - 15) / 18 * 100)

    # the average is over A and B (C lacks DoG), and its improvement uses the averaged FIDs
    avg = {m: get(board, lb.AVERAGE, m) for m in ("none", "cfg", "dog")}
    assert [avg[m]["fid"] for m in ("none", "cfg", "dog")] == [15.5, 13.5, 10.75]
    assert avg["dog"]["n_datasets"] == 2 and pd.isna(avg["dog"]["w"])
    assert avg["dog"]["fid_improvement_vs_cfg_pct"] == pytest.approx((13.5 - 10.75) / 13.5 * 100)    # 20.37
    assert avg["dog"]["fid_improvement_vs_none_pct"] == pytest.approx((15.5 - 10.75) / 15.5 * 100)  # 30.65
    assert list(board["dataset"]) == ["A"] * 3 + ["B"] * 3 + ["C"] * 2 + [lb.AVERAGE] * 3
    assert list(board["method"][:3]) == ["none", "cfg", "dog"]


def test_w1_is_shared_with_fine_tune_only():
    # guidance only hurts CFG here: its best w is 1, i.e. the `none` sample, when w = 1 is on the grid
    rows = [row("A", "none", 1.0, 0, fid=5.0), row("A", "cfg", 1.5, 0, fid=7.0), row("A", "dog", 1.5, 0, fid=4.0)]
    board = lb.build_leaderboard(rows)
    assert (get(board, "A", "cfg")["w"], get(board, "A", "cfg")["fid"]) == (1.0, 5.0)
    assert get(board, "A", "dog")["fid_improvement_vs_cfg_pct"] == pytest.approx(20.0)
    board = lb.build_leaderboard(rows, shared_w1=False)  # a grid without w = 1
    assert (get(board, "A", "cfg")["w"], get(board, "A", "cfg")["fid"]) == (1.5, 7.0)
    # no method is invented: without dog rows, no dog copy of the w = 1 row
    only_cfg = lb.with_shared_w1(rows[:2])
    assert set(only_cfg["method"]) == {"none", "cfg"} and len(only_cfg) == 3


def test_higher_is_better_metrics_and_other_columns():
    rows = [
        row("A", "none", 1.0, 0, fd_effnet=3.0, precision=0.50, recall=0.60),
        row("A", "cfg", 2.0, 0, fd_effnet=2.5, precision=0.70, recall=0.40),
        row("A", "cfg", 3.0, 0, fd_effnet=2.8, precision=0.80, recall=0.30),
        row("A", "dog", 2.0, 0, fd_effnet=2.0, precision=0.75, recall=0.50),
    ]
    by_precision = lb.build_leaderboard(rows, select_by="precision")
    cfg = get(by_precision, "A", "cfg")
    assert (cfg["w"], cfg["precision"], cfg["fd_effnet"]) == (3.0, 0.80, 2.8)  # highest precision wins
    dog = get(by_precision, "A", "dog")
    assert dog["fd_effnet_improvement_vs_cfg_pct"] == pytest.approx((2.8 - 2.0) / 2.8 * 100)
    assert "precision_improvement_vs_cfg_pct" not in by_precision.columns  # improvements are for FD metrics
    by_fd = lb.build_leaderboard(rows, select_by="fd_effnet")
    assert get(by_fd, "A", "cfg")["w"] == 2.0
    assert "fid" not in by_fd.columns  # metrics without values are left out
    with pytest.raises(ValueError, match="select_by='fid'"):
        lb.build_leaderboard(rows, select_by="fid")


def test_relative_improvement():
    assert lb.relative_improvement(20.0, 15.0) == 25.0
    assert lb.relative_improvement(10.0, 12.0) == -20.0  # DoG worse -> negative
    assert math.isnan(lb.relative_improvement(0.0, 1.0)) and math.isnan(lb.relative_improvement(float("nan"), 1.0))


def test_runs_csv_write_update_read(tmp_path):
    path = tmp_path / "res" / "runs.csv"
    first = [row("A", "none", 1.0, 0, fid=10.0, num_samples=100), row("A", "cfg", 1.5, 0, fid=9.0)]
    lb.write_runs(first, path)
    header = path.read_text().splitlines()[0].split(",")
    assert header == list(lb.RUNS_COLUMNS)  # every column, missing ones empty
    assert path.read_text().splitlines()[1].startswith("A,none,1.0,0,10.0" + "," * 11 + "100")
    # a resumed run replaces its own row and adds new ones; the order stays dataset, method, w, seed
    updated = lb.update_runs(path, [row("A", "cfg", 1.5, 0, fid=8.5), row("A", "dog", 1.5, 0, fid=8.0),
                                    row("A", "cfg", 1.2, 0, fid=9.5, git_commit="abc")])
    back = lb.read_runs(path)
    assert len(back) == 4 and list(zip(back["method"], back["w"])) == [("none", 1.0), ("cfg", 1.2), ("cfg", 1.5), ("dog", 1.5)]
    assert back.loc[back["w"] == 1.5, "fid"].tolist() == [8.5, 8.0]
    assert back["git_commit"].tolist()[1] == "abc" and pd.isna(back["fd_dinov2"]).all()
    pd.testing.assert_frame_equal(back, lb.runs_frame(updated), check_dtype=False)
    # no temporary file left (the lock file that serialises concurrent writers stays, empty, by design)
    assert sorted(p.name for p in path.parent.iterdir()) == ["runs.csv", "runs.csv.lock"]
    assert len(lb.read_runs(tmp_path / "missing.csv")) == 0


def test_runs_rows_are_checked():
    with pytest.raises(ValueError, match="w = 1"):
        lb.runs_frame([row("A", "none", 2.0, 0, fid=1.0)])
    with pytest.raises(ValueError, match="unknown method"):
        lb.runs_frame([row("A", "cgf", 2.0, 0, fid=1.0)])
    with pytest.raises(ValueError, match="lack 'seed'"):
        lb.runs_frame([{"dataset": "A", "method": "cfg", "w": 2.0, "fid": 1.0}])
    assert lb.runs_frame([row("A", "cfg", 1.50004, 0)])["w"][0] == 1.5


def test_leaderboard_csv_and_markdown(tmp_path):
    board = lb.build_leaderboard(ROWS)
    lb.write_leaderboard(board, tmp_path / "leaderboard.csv")
    back = pd.read_csv(tmp_path / "leaderboard.csv")
    assert list(back.columns) == list(board.columns)
    assert back.loc[2, "fid_improvement_vs_cfg_pct"] == pytest.approx(27.7777777)
    text = lb.to_markdown(board)
    lines = text.splitlines()
    assert lines[0] == "| dataset | method | w | fid | DoG vs cfg (fid) | DoG vs none (fid) |"
    assert "| A | dog | 2 | 6.50 ± 0.71 | +27.8% | +40.9% |" in lines
    assert "| A | cfg | 1.5 | 9.00 ± 0.00 |  |  |" in lines
    assert "| average | dog |  | 10.75 | +20.4% | +30.6% |" in lines
    assert len(lines) == 2 + len(board)


def test_run_provenance():
    info = lb.run_provenance()
    assert set(info) == {"torch_version", "dogbench_version", "git_commit", "timestamp"}
    assert info["timestamp"].endswith("+00:00") and set(info) <= set(lb.RUNS_COLUMNS)
