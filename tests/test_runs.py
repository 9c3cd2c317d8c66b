"""runs.csv: rows keyed by dataset, phase, method, w and seed; read, merged and written atomically."""
import pandas as pd
import pytest

from benchmark.harness import runs


def row(dataset, method, w, seed, phase="report", **metrics):
    return {"dataset": dataset, "phase": phase, "method": method, "w": w, "seed": seed, **metrics}


def test_runs_csv_write_update_read(tmp_path):
    path = tmp_path / "res" / "runs.csv"
    first = [row("A", "none", 1.0, 0, fid=10.0, num_samples=100), row("A", "cfg", 1.5, 0, fid=9.0)]
    runs.write_runs(first, path)
    header = path.read_text().splitlines()[0].split(",")
    assert header == list(runs.RUNS_COLUMNS)  # every column, missing ones empty
    assert path.read_text().splitlines()[1].startswith("A,report,none,1.0,,0,10.0" + "," * len(runs.METRICS) + "100")
    # a resumed run replaces its own row and adds new ones; the order stays dataset, method, w, seed
    updated = runs.update_runs(path, [row("A", "cfg", 1.5, 0, fid=8.5), row("A", "dog", 1.5, 0, fid=8.0),
                                    row("A", "cfg", 1.2, 0, fid=9.5, git_commit="abc")])
    back = runs.read_runs(path)
    assert len(back) == 4 and list(zip(back["method"], back["w"])) == [("none", 1.0), ("cfg", 1.2), ("cfg", 1.5), ("dog", 1.5)]
    # the same point in another phase is another row (selection and report rows never replace each other)
    assert len(runs.update_runs(path, [row("A", "cfg", 1.5, 0, phase="selection", fid=1.0)])) == 5
    assert back.loc[back["w"] == 1.5, "fid"].tolist() == [8.5, 8.0]
    assert back["git_commit"].tolist()[1] == "abc" and pd.isna(back["fd_dinov2"]).all()
    pd.testing.assert_frame_equal(back, runs.runs_frame(updated), check_dtype=False)
    # no temporary file left (the lock file that serialises concurrent writers stays, empty, by design)
    assert sorted(p.name for p in path.parent.iterdir()) == ["runs.csv", "runs.csv.lock"]
    assert len(runs.read_runs(tmp_path / "missing.csv")) == 0


def test_runs_rows_are_checked():
    with pytest.raises(ValueError, match="w = 1"):
        runs.runs_frame([row("A", "none", 2.0, 0, fid=1.0)])
    # a method's other parameters are a key column of their own, empty for none, cfg and dog
    both = runs.runs_frame([row("A", "cfg+dog", None, 0, params="w_cfg=1.5 w_dog=2", fid=1.0), row("A", "cfg", 2.0, 0)])
    assert list(both["params"]) == ["w_cfg=1.5 w_dog=2", ""]
    with pytest.raises(ValueError, match="lack 'seed'"):
        runs.runs_frame([{"dataset": "A", "phase": "report", "method": "cfg", "w": 2.0, "fid": 1.0}])
    with pytest.raises(ValueError, match="unknown phase"):
        runs.runs_frame([row("A", "cfg", 2.0, 0, phase="tuning", fid=1.0)])
    assert runs.runs_frame([row("A", "cfg", 1.50004, 0)])["w"][0] == 1.5


def test_run_provenance():
    info = runs.run_provenance()
    assert set(info) == {"torch_version", "dogbench_version", "git_commit", "timestamp"}
    assert info["timestamp"].endswith("+00:00") and set(info) <= set(runs.RUNS_COLUMNS)
