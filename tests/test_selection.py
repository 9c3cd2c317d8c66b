"""Choosing each method's w on the selection rows, against choices made by hand."""
import math

import pytest

from benchmark.harness import selection as sel


def row(dataset, method, w, seed, **metrics):
    return {"dataset": dataset, "phase": "selection", "method": method, "w": w, "seed": seed, **metrics}


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


def test_best_w_by_mean_over_seeds_ties_to_the_smaller_w():
    best = sel.select_best(ROWS, "fid")
    a = {r.method: r for r in best[best["dataset"] == "A"].itertuples()}
    assert (a["none"].w, a["none"].fid, a["none"].n_seeds) == (1.0, 11.0, 2)
    assert a["none"].fid_std == pytest.approx(math.sqrt(2))
    assert (a["cfg"].w, a["cfg"].fid) == (1.5, 9.0)  # tie at 9.0 with w = 2: the smaller w
    assert (a["dog"].w, a["dog"].fid) == (2.0, 6.5)
    assert sel.chosen_w(ROWS, "fid")[("B", "cfg")] == 1.5 and sel.chosen_w(ROWS, "fid")[("C", "cfg")] == 2.0


def test_w1_is_shared_with_fine_tune_only():
    # guidance only hurts CFG here: its best w is 1, i.e. the `none` sample, when w = 1 is on the grid
    rows = [row("A", "none", 1.0, 0, fid=5.0), row("A", "cfg", 1.5, 0, fid=7.0), row("A", "dog", 1.5, 0, fid=4.0)]
    board = sel.select_best(rows, "fid")
    assert (get(board, "A", "cfg")["w"], get(board, "A", "cfg")["fid"]) == (1.0, 5.0)
    board = sel.select_best(rows, "fid", shared_w1=False)  # a grid without w = 1
    assert (get(board, "A", "cfg")["w"], get(board, "A", "cfg")["fid"]) == (1.5, 7.0)
    # no method is invented: without dog rows, no dog copy of the w = 1 row
    only_cfg = sel.with_shared_w1(rows[:2])
    assert set(only_cfg["method"]) == {"none", "cfg"} and len(only_cfg) == 3


def test_higher_is_better_metrics_and_other_columns():
    rows = [
        row("A", "none", 1.0, 0, fd_effnet=3.0, precision=0.50, recall=0.60),
        row("A", "cfg", 2.0, 0, fd_effnet=2.5, precision=0.70, recall=0.40),
        row("A", "cfg", 3.0, 0, fd_effnet=2.8, precision=0.80, recall=0.30),
        row("A", "dog", 2.0, 0, fd_effnet=2.0, precision=0.75, recall=0.50),
    ]
    by_precision = sel.select_best(rows, "precision")
    cfg = get(by_precision, "A", "cfg")
    assert (cfg["w"], cfg["precision"], cfg["fd_effnet"]) == (3.0, 0.80, 2.8)  # highest precision wins
    by_fd = sel.select_best(rows, "fd_effnet")
    assert get(by_fd, "A", "cfg")["w"] == 2.0
    assert "fid" not in by_fd.columns  # metrics without values are left out
    with pytest.raises(ValueError, match="select_by='fid'"):
        sel.select_best(rows, "fid")
