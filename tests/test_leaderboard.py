"""The leaderboard from report-seed sample sets with known features: the numbers are the report samples' (never the
selection samples'), every number has an interval, DoG's differences are paired, and the controls are there."""
import numpy as np
import pandas as pd
import pytest

from benchmark.harness import leaderboard as lb
from benchmark.harness.leaderboard_md import describe, to_markdown
from benchmark.harness.loading import experiment_from_dict
from benchmark.metrics.frechet import frechet_distance, gaussian_stats
from benchmark.metrics.card import SampleSetCard, SpaceInputs
from benchmark.metrics.reference import ReferenceStats
from benchmark.metrics.registry import METRICS
from benchmark.metrics.splits import SplitFeatures

DIM, N = 6, 120
DATASETS = ["caltech101-32", "cub100-32"]
# distance of each method's feature mean from the reference mean (dog best, then cfg, then fine-tune only)
SHIFT = {"none": 1.0, "cfg": 0.8, "dog": 0.3, "real": 0.0}


def experiment(**changes):
    data = {"name": "t", "datasets": DATASETS, "autoencoder": "identity", "methods": ["none", "cfg", "dog"],
            "source": {"checkpoint": "x.pt", "model": "DiT-N/2", "num_classes": 10, "image_size": 32},
            "w_grid": [1.0, 2.0, 3.0], "sampling": {"num_samples": N},
            "evaluation": {"metrics": ["fd_effnet", "prdc_effnet"], "select_by": "fd_effnet"},
            "selection": {"seeds": [0]}, "report": {"seeds": [1, 2], "bootstrap": 60}}
    data.update(changes)
    return experiment_from_dict(data)


class Sets:
    """The metric cards of the runs rows' sample sets, by their sample_dir (the leaderboard's whole view of the
    samples); a card builds only the metrics it is asked for."""

    def __init__(self):
        self.sets = {}

    def add(self, name: str, features, inputs: SpaceInputs, labels=None) -> str:
        self.sets[name] = SampleSetCard(list(METRICS), {"effnet": features}, {"effnet": inputs}, labels)
        return name

    def __call__(self, row) -> SampleSetCard:
        return self.sets[row["sample_dir"]]


@pytest.fixture
def setup():
    """Report sets of none (w=1), cfg and dog at w=2 on seeds 1 and 2, the seed-noise and real controls, and
    selection rows whose recorded metrics are deliberately unlike anything the report features give."""
    sets = Sets()
    rng = np.random.default_rng(0)
    rows = []
    truth = {}
    for d, dataset in enumerate(DATASETS):
        ref = rng.normal(0, 1, (4000, DIM))
        mu, sigma = gaussian_stats(ref)
        reference = SpaceInputs(ReferenceStats(mu, sigma, ref[:500].astype(np.float32), 4000, {}))
        for method, w in (("none", 1.0), ("cfg", 2.0), ("dog", 2.0)):
            for seed in (1, 2):
                features = (rng.normal(0, 1, (N, DIM)) + SHIFT[method]).astype(np.float32)
                truth[(dataset, method, seed)] = frechet_distance(*gaussian_stats(features), mu, sigma)
                sample_dir = sets.add(f"{dataset}/{method}-{seed}", features, reference)
                rows.append({"dataset": dataset, "phase": "report", "method": method, "w": w, "seed": seed,
                             "num_samples": N, "sample_dir": sample_dir})
            # selection rows (seed 0): dog's best is w = 2 there too, but their recorded values are fake
            rows.append({"dataset": dataset, "phase": "selection", "method": method, "w": w, "seed": 0,
                         "fd_effnet": 0.01 * (1 + SHIFT[method]), "num_samples": N, "sample_dir": "unused"})
        rows.append({"dataset": dataset, "phase": "selection", "method": "dog", "w": 3.0, "seed": 0,
                     "fd_effnet": 5.0, "num_samples": N, "sample_dir": "unused"})
        real = rng.normal(0, 1, (N, DIM)).astype(np.float32)
        rows.append({"dataset": dataset, "phase": "control", "method": "real", "w": np.nan, "seed": 1,
                     "num_samples": N, "sample_dir": sets.add(f"{dataset}/real", real, reference)})
    return sets, pd.DataFrame(rows), truth


def get(board, dataset, method, rule):
    hit = board[(board["dataset"] == dataset) & (board["method"] == method) & (board["rule"] == rule)]
    assert len(hit) == 1, (dataset, method, rule)
    return hit.iloc[0]


def test_numbers_come_from_report_samples_with_intervals(setup):
    sets, runs, truth = setup
    board = lb.build_leaderboard(experiment(), runs, sets)
    for dataset in DATASETS:
        for method, rule in (("none", "baseline"), ("cfg", lb.BEST), ("dog", lb.BEST)):
            row = get(board, dataset, method, rule)
            expected = np.mean([truth[(dataset, method, s)] for s in (1, 2)])
            assert row["fd_effnet"] == pytest.approx(expected, rel=1e-9)  # report seeds, never the selection's 0.01
            assert row["fd_effnet_low"] < row["fd_effnet"] < row["fd_effnet_high"]
            assert row["n_seeds"] == 2 and row["n_samples"] == N
            for c in ("precision_effnet", "recall_effnet", "density_effnet", "coverage_effnet"):
                assert row[f"{c}_low"] <= row[c] <= row[f"{c}_high"], c
        dog = get(board, dataset, "dog", lb.BEST)
        assert dog["w"] == 2.0  # chosen on the selection rows
        assert dog["fd_effnet_selection"] == pytest.approx(0.013)
        assert dog["fd_effnet_gap"] == pytest.approx(dog["fd_effnet"] - 0.013)
        cfg, none = get(board, dataset, "cfg", lb.BEST), get(board, dataset, "none", "baseline")
        assert dog["fd_effnet_diff_vs_cfg"] == pytest.approx(dog["fd_effnet"] - cfg["fd_effnet"])
        assert dog["fd_effnet_improvement_vs_none_pct"] == pytest.approx(
            (none["fd_effnet"] - dog["fd_effnet"]) / none["fd_effnet"] * 100)
        # DoG's features sit much closer to the reference: both paired differences are resolved
        assert dog["fd_effnet_diff_vs_none_high"] < 0 and dog["fd_effnet_significant_vs_none"]
        assert dog["fd_effnet_improvement_vs_cfg_pct_low"] > 0
        # CFG against fine-tune only (does guidance help at all), never against itself
        assert cfg["fd_effnet_diff_vs_none"] == pytest.approx(cfg["fd_effnet"] - none["fd_effnet"])
        assert cfg["fd_effnet_diff_vs_none_low"] <= cfg["fd_effnet_diff_vs_none"] <= cfg["fd_effnet_diff_vs_none_high"]
        assert not np.isfinite(cfg["fd_effnet_diff_vs_cfg"])


def test_controls_and_average(setup):
    sets, runs, _ = setup
    board = lb.build_leaderboard(experiment(), runs, sets)
    noise = get(board, DATASETS[0], "none", "seed noise")
    assert noise["fd_effnet_diff_low"] < 0 < noise["fd_effnet_diff_high"]  # the method against itself: 0 inside
    real = get(board, DATASETS[0], "real", lb.CONTROL)
    assert real["fd_effnet"] < get(board, DATASETS[0], "dog", lb.BEST)["fd_effnet"]  # the floor
    average = get(board, lb.AVERAGE, "dog", lb.BEST)
    per_dataset = [get(board, d, "dog", lb.BEST)["fd_effnet"] for d in DATASETS]
    assert average["fd_effnet"] == pytest.approx(np.mean(per_dataset)) and average["n_datasets"] == 2
    assert average["fd_effnet_low"] < average["fd_effnet"] < average["fd_effnet_high"]
    assert set(board[board["dataset"] == lb.AVERAGE]["method"]) == {"none", "cfg", "dog"}


def test_fixed_w_rows_and_markdown(setup):
    sets, runs, _ = setup
    exp = experiment(report={"seeds": [1, 2], "bootstrap": 40, "fixed_w": [2.0]})
    board = lb.build_leaderboard(exp, runs, sets)
    fixed = get(board, DATASETS[0], "dog", "w=2")
    best = get(board, DATASETS[0], "dog", lb.BEST)
    assert fixed["fd_effnet"] == best["fd_effnet"]  # here the fixed w is the chosen one: the same samples
    text = to_markdown(board)
    assert text.splitlines()[0].startswith("| dataset | method | rule | w | fd_effnet |")
    assert "| caltech101-32 | dog | best w | 2 |" in text and " *" in text
    assert "report seeds [1, 2]" in describe(exp, board) and "selection seeds [0]" in describe(exp, board)


def test_missing_report_sets_leave_the_row_out(setup):
    sets, runs, _ = setup
    partial = runs[~((runs["method"] == "cfg") & (runs["seed"] == 2))]
    board = lb.build_leaderboard(experiment(), partial, sets)
    assert not len(board[(board["method"] == "cfg") & (board["rule"] == lb.BEST)])
    assert "fd_effnet_diff_vs_cfg" not in board.columns or board["fd_effnet_diff_vs_cfg"].isna().all()


def test_no_leaderboard_function_is_longer_than_60_lines():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(lb))
    lengths = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert max(lengths.values()) <= 60, {name: n for name, n in lengths.items() if n > 60}


def test_every_comparison_says_which_sign_is_better(setup):
    sets, runs, _ = setup
    board = lb.build_leaderboard(experiment(), runs, sets)
    header, _, *lines = to_markdown(board).splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    for name in ("CFG", "fine-tune only"):
        diff = columns.index(f"fd_effnet minus {name} (negative = better)")
        assert columns[diff + 1] == f"improvement over {name}, % (fd_effnet; positive = better)"  # beside it
    dog = next(line for line in lines if line.startswith(f"| {DATASETS[0]} | dog | best w |"))
    cells = [c.strip() for c in dog.strip("|").split("|")]
    diff = columns.index("fd_effnet minus fine-tune only (negative = better)")
    # DoG is closer to the reference than fine-tune only: a negative difference, a positive improvement
    assert cells[diff].startswith("-") and cells[diff + 1].startswith("+") and cells[diff + 1].endswith("*")
    assert "positive = better" in describe(experiment(), board)


def test_paper_summary_averages_the_relative_improvement_over_datasets(setup, monkeypatch):
    sets, runs, _ = setup
    board = lb.build_leaderboard(experiment(), runs, sets)
    summary = get(board, lb.SUMMARY, "dog", lb.BEST)
    per_dataset = [get(board, d, "dog", lb.BEST)["fd_effnet_improvement_vs_none_pct"] for d in DATASETS]
    assert summary["fd_effnet_improvement_vs_none_pct"] == pytest.approx(np.mean(per_dataset))
    assert summary["fd_effnet_improvement_vs_none_pct_low"] < np.mean(per_dataset) \
        < summary["fd_effnet_improvement_vs_none_pct_high"]
    assert summary["n_datasets"] == 2 and summary["fd_effnet_significant_vs_none"]
    assert set(board[board["dataset"] == lb.SUMMARY]["method"]) == {"cfg", "dog"}  # the guided methods
    assert "paper summary" in to_markdown(board)
    # the summaries draw datasets from a generator of their own: every other number is what it is without them
    monkeypatch.setattr(lb._Statistic, "_summaries", lambda self, out, indices: {})
    without = lb.build_leaderboard(experiment(), runs, sets)
    others = board["dataset"] != lb.SUMMARY
    pd.testing.assert_frame_equal(without[others], board[others][without.columns])


CARD = ["fd_effnet", "prdc_effnet", "kid_effnet", "class_kid_effnet", "vendi_effnet", "copy_effnet"]
CLASSES = 4


def split(features, labels=None):
    labels = np.zeros(len(features), dtype=np.int64) if labels is None else labels
    return SplitFeatures(features.astype(np.float32), labels, np.arange(len(features)), {"split": "test"})


@pytest.fixture
def card_setup():
    """One dataset, every metric of the card: fine-tune only and CFG draw new images of the target, DoG's samples
    are (nearly) copies of fine-tuning images; the real control is more of the target's images."""
    rng = np.random.default_rng(5)
    target = lambda n: rng.normal(0, 1, (n, DIM))  # noqa: E731
    ref, train, held_out = target(3000), target(300), target(300)
    mu, sigma = gaussian_stats(ref)
    reals = np.concatenate([train, held_out])
    inputs = SpaceInputs(ReferenceStats(mu, sigma, ref[:500].astype(np.float32), 3000, {}), train=split(train),
                         held_out=split(held_out), classes=split(reals, np.arange(len(reals)) % CLASSES))
    sets, rows = Sets(), []
    labels = np.arange(N) % CLASSES
    for method, w in (("none", 1.0), ("cfg", 2.0), ("dog", 2.0)):
        for seed in (1, 2):
            features = train[rng.integers(0, len(train), N)] + 1e-3 * target(N) if method == "dog" else target(N)
            rows.append({"dataset": DATASETS[0], "phase": "report", "method": method, "w": w, "seed": seed,
                         "num_samples": N, "sample_dir": sets.add(f"{method}-{seed}", features, inputs, labels)})
        rows.append({"dataset": DATASETS[0], "phase": "selection", "method": method, "w": w, "seed": 0,
                     "fd_effnet": 3 - w, "num_samples": N, "sample_dir": "unused"})  # w = 2 chosen
    rows.append({"dataset": DATASETS[0], "phase": "control", "method": "real", "w": np.nan, "seed": 1,
                 "num_samples": N, "sample_dir": sets.add("real", target(N), inputs, labels)})
    return sets, pd.DataFrame(rows)


def test_every_metric_of_the_card_has_an_interval_and_paired_differences(card_setup):
    sets, runs = card_setup
    exp = experiment(datasets=DATASETS[:1], evaluation={"metrics": CARD, "select_by": "fd_effnet"})
    board = lb.build_leaderboard(exp, runs, sets)
    columns = ["fd_effnet", "precision_effnet", "recall_effnet", "density_effnet", "coverage_effnet", "kid_effnet",
               "class_kid_effnet", "vendi_effnet", "copy_effnet"]
    dog, cfg, none = (get(board, DATASETS[0], m, r) for m, r in (("dog", lb.BEST), ("cfg", lb.BEST),
                                                                 ("none", "baseline")))
    for c in columns:
        for row in (dog, cfg, none):
            assert row[f"{c}_low"] <= row[c] <= row[f"{c}_high"], c
        for baseline, base in (("cfg", cfg), ("none", none)):
            assert dog[f"{c}_diff_vs_{baseline}"] == pytest.approx(dog[c] - base[c]), c
            assert dog[f"{c}_diff_vs_{baseline}_low"] <= dog[f"{c}_diff_vs_{baseline}"] \
                <= dog[f"{c}_diff_vs_{baseline}_high"], c
            assert dog[f"{c}_significant_vs_{baseline}"] == (not dog[f"{c}_diff_vs_{baseline}_low"] <= 0
                                                             <= dog[f"{c}_diff_vs_{baseline}_high"]), c
        # the paper's relative improvement is a Frechet distance's alone
        assert (f"{c}_improvement_vs_none_pct" in board.columns) == (c == "fd_effnet"), c
    # DoG's copies of fine-tuning images: copy rate 1, its interval clipped at 1, resolved against both baselines
    assert dog["copy_effnet"] == 1.0 and dog["copy_effnet_high"] == 1.0
    assert none["copy_effnet"] < 0.2 and 0.0 <= none["copy_effnet_low"]
    assert dog["copy_effnet_significant_vs_none"] and dog["copy_effnet_significant_vs_cfg"]
    assert dog["copy_effnet_diff_vs_none_low"] > 0
    # the real control: no copy rate (its images are the target's own), KID of the same distribution ~0 inside
    real = get(board, DATASETS[0], "real", lb.CONTROL)
    assert not np.isfinite(real["copy_effnet"])
    assert real["kid_effnet_low"] < 0 < real["kid_effnet_high"]
    noise = get(board, DATASETS[0], "none", lb.SEED_NOISE)
    assert noise["kid_effnet_diff_low"] < 0 < noise["kid_effnet_diff_high"]
    # and in the markdown: a difference per card column, * where resolved, no relative improvement beside it
    header, _, *lines = to_markdown(board).splitlines()
    names = [c.strip() for c in header.strip("|").split("|")]
    at = names.index("copy_effnet minus fine-tune only (negative = better)")
    dog_cells = [c.strip() for c in next(line for line in lines if line.startswith(
        f"| {DATASETS[0]} | dog | best w |")).strip("|").split("|")]
    assert dog_cells[at].startswith("+1.000") or dog_cells[at].startswith("+0.9")
    assert dog_cells[at].endswith("*") and "improvement over fine-tune only, % (copy_effnet" not in header
