"""Several fine-tunes of one target in one experiment (``finetunes:``): each variant is a partial ``finetune``, run
as the experiment with that fine-tune; runs.csv's ``finetune`` column names it; the leaderboard has each variant's
block and its paired comparison with the first variant. Without ``finetunes`` nothing changes."""
import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.cli import main
from benchmark.errors import ConfigError, UserError
from benchmark.harness.finetunes import ONE, one_finetune, parse_selection, variant, variant_names, variants
from benchmark.harness.identity import STAGES, stage_hash
from benchmark.harness.loading import experiment_from_dict, load_experiment
from benchmark.harness.methods import run_spec
from benchmark.harness.run import current_rows, expected_hashes
from benchmark.harness.runs import RUNS_COLUMNS, VARIANT, merge_runs, read_runs, runs_frame, write_runs
from benchmark import standins
from benchmark.harness.variant_report import variant_leaderboard, variant_markdown
from benchmark.io import REPO_ROOT
from benchmark.metrics.frechet import gaussian_stats
from benchmark.metrics.reference import ReferenceStats
from benchmark.metrics.card import SampleSetCard, SpaceInputs
from wandb_records import read_runs as read_wandb_runs

DS = "caltech101-32"
LORA4 = {"adapter": {"kind": "lora", "rank": 4, "alpha": 4}}


def small(**changes):
    data = {"name": "t", "datasets": [DS], "autoencoder": "identity", "w_grid": [1.0, 2.0],
            "source": {"checkpoint": "x.pt", "model": "DiT-N/2", "num_classes": 10, "image_size": 32},
            "finetune": {"steps": 50, "lr": 3.0e-4}}
    data.update(changes)
    return experiment_from_dict(data)


def hashes(exp, dataset=DS) -> dict:
    """Every stage's hash of the experiment's first sample set."""
    run = run_spec(dataset, "dog", exp.grid("dog")[-1], exp.report.seeds[0])
    return {stage: stage_hash(exp, stage, dataset, **({} if stage in ("latents", "finetune") else {"run": run}))
            for stage in STAGES}


def test_a_variant_is_finetune_with_its_keys_replaced():
    exp = small(finetunes={"full": {}, "lora-r4": LORA4, "fast": {"lr": 1.0e-3}})
    assert variant_names(exp) == ["full", "lora-r4", "fast"]
    full, lora, fast = variants(exp).values()
    assert full.finetune == exp.finetune and full.finetunes is None
    assert lora.finetune.adapter.rank == 4 and lora.finetune.steps == 50 and lora.finetune.lr == 3.0e-4
    assert fast.finetune.lr == 1.0e-3 and fast.finetune.adapter is None
    assert list(variants(exp, ["fast", "full"])) == ["full", "fast"]  # the experiment's order


def test_each_variant_has_the_identities_of_a_one_finetune_experiment_with_its_settings():
    exp = small(finetunes={"full": {}, "lora-r4": LORA4})
    plain = small()
    assert hashes(variant(exp, "full")) == hashes(plain)
    assert hashes(variant(exp, "lora-r4")) == hashes(small(finetune={"steps": 50, "lr": 3.0e-4, **LORA4}))
    assert hashes(variant(exp, "lora-r4"))["finetune"] != hashes(plain)["finetune"]
    assert hashes(variant(exp, "lora-r4"))["latents"] == hashes(plain)["latents"]  # same data, one latent cache


@pytest.mark.parametrize("name", ["default", "paper", "mini", "dogfit", "mini-gpu"])
def test_the_shipped_experiments_keep_their_config_and_hashes(name):
    """No ``finetunes`` key in their config (config.yaml, W&B), and their stage hashes are those of the same
    experiment with finetunes written as null; one variant of {} has them too."""
    exp = load_experiment(name, check_storage=False)
    assert exp.finetunes is None and "finetunes" not in exp.to_dict() and "finetunes" not in exp.to_yaml()
    assert variant_names(exp) == [ONE] and variant(exp, ONE) is exp
    dataset = exp.dataset_names()[0]
    assert hashes(load_experiment(name, ["finetunes=null"], check_storage=False), dataset) == hashes(exp, dataset)
    assert hashes(variant(load_experiment(name, ["finetunes={only: {}}"], check_storage=False), "only"), dataset) \
        == hashes(exp, dataset)


def test_the_committed_default_results_are_still_current_rows():
    """Every row of results/default/runs.csv is one the default experiment makes now: its identities are unchanged."""
    committed = REPO_ROOT / "results" / "default" / "runs.csv"
    if not committed.exists():
        pytest.skip("no committed results/default")
    runs = read_runs(committed)
    assert (runs[VARIANT] == "").all()
    assert len(current_rows(load_experiment("default"), runs)) == len(runs)


@pytest.mark.parametrize("finetunes, words", [
    ({}, "finetunes is empty; name at least one variant"),
    ({"a b": {}}, "variant name 'a b' names folders"),
    ({"a": 3}, "finetunes.a must be a mapping of finetune keys"),
    ({"a": {"adapter": {"kind": "lorax"}}}, "finetunes.a.adapter.kind='lorax' is not one of lora"),
    ({"a": {"adapter": {"kind": "lora", "rank": 0}}}, "finetunes.a.adapter.rank=0 must be >= 1"),
    ({"a": {"adapter": {}}}, "finetunes.a.adapter is empty"),
    ({"a": {"stepz": 3}}, "did you mean 'finetunes.a.steps'"),
])
def test_bad_variants_are_one_line_errors(finetunes, words):
    with pytest.raises(ConfigError) as error:
        small(finetunes=finetunes)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_variant_too_short_for_a_methods_snapshot_names_the_variant():
    auto = {"name": "autoguidance", "guides": {"weak": {"step": 40}}}
    assert small(methods=["none", auto])  # 50 steps: the snapshot at 40 exists
    with pytest.raises(ConfigError, match=r"^finetunes\.short: "):
        small(methods=["none", auto], finetunes={"long": {}, "short": {"steps": 20}})


def test_finetunes_flag_picks_variants_and_names_an_unknown_one():
    exp = small(finetunes={"full": {}, "lora-r4": LORA4})
    assert parse_selection(exp, None) is None
    assert parse_selection(exp, "lora-r4") == ["lora-r4"]
    with pytest.raises(UserError, match="--finetunes lora-r5 not in experiment t; did you mean 'lora-r4'"):
        parse_selection(exp, "lora-r5")
    with pytest.raises(UserError, match="names no variant"):
        parse_selection(exp, ",")
    with pytest.raises(UserError, match="has no finetunes"):
        parse_selection(small(), "full")


def test_sweep_takes_one_variant_and_refuses_several():
    assert one_finetune(small(finetunes={"lora-r4": LORA4}), "dogbench sweep").finetune.adapter.rank == 4
    with pytest.raises(UserError, match="dogbench sweep runs one fine-tune; experiment t has 2 finetunes"):
        one_finetune(small(finetunes={"full": {}, "lora-r4": LORA4}), "dogbench sweep")


def test_runs_csv_has_the_variant_after_the_earlier_columns_and_in_the_row_key(tmp_path):
    assert RUNS_COLUMNS[RUNS_COLUMNS.index("timestamp") + 1] == VARIANT  # only later additions follow it
    row = {"dataset": DS, "phase": "report", "method": "dog", "w": 1.5, "params": "", "seed": 1, "fd_effnet": 10.0}
    merged = merge_runs([{**row, VARIANT: "full"}], [{**row, VARIANT: "lora-r4", "fd_effnet": 12.0}])
    assert list(merged[VARIANT]) == ["full", "lora-r4"]  # the same setting under two fine-tunes: two rows
    assert list(merge_runs(merged, [{**row, VARIANT: "full", "fd_effnet": 11.0}])["fd_effnet"]) == [11.0, 12.0]
    # a file written before the column reads as one fine-tune (empty name)
    old = tmp_path / "runs.csv"
    runs_frame([row]).drop(columns=[VARIANT]).to_csv(old, index=False)
    assert list(read_runs(old)[VARIANT]) == [""]
    write_runs(read_runs(old), old)
    assert ",timestamp,finetune,nfe," in old.read_text().splitlines()[0]  # later columns after finetune


def test_current_rows_keep_each_variants_own_rows():
    exp = small(finetunes={"full": {}, "lora-r4": LORA4})
    full, lora = variants(exp).values()
    a, b = sorted(expected_hashes(full, DS))[0], sorted(expected_hashes(lora, DS))[0]
    rows = runs_frame([{"dataset": DS, "phase": "selection", "method": "none", "w": 1.0, "seed": 0,
                        "config_hash": h, VARIANT: v} for h, v in ((a, "full"), (b, "lora-r4"), (a, "lora-r4"))])
    kept = current_rows(exp, rows)
    assert sorted(zip(kept["config_hash"], kept[VARIANT])) == sorted([(a, "full"), (b, "lora-r4")])


def test_the_shipped_lora_experiments_resolve():
    lora = load_experiment("lora")
    assert variant_names(lora) == ["full", "lora-r4", "lora-r16"]
    ranks = [v.finetune.adapter and v.finetune.adapter.rank for v in variants(lora).values()]
    assert ranks == [None, 4, 16]
    paper = load_experiment("paper-lora", check_storage=False)
    assert variant_names(paper)[0] == "full" and variant(paper, "full").finetune == \
        load_experiment("paper", check_storage=False).finetune


def test_paper_lora_takes_the_dry_runs_standin_overrides(tmp_path):
    """What `make dry-run ARGS="--exp paper-lora"` loads: paper.yaml's protocol on the stand-ins, two fine-tunes."""
    paths = standins.standin_paths(tmp_path, "DiT-B/2", 64)
    for p in (paths["checkpoint"], paths["inception"], paths["dinov2_weights"]):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    paths["autoencoder"].mkdir()
    overrides = standins.experiment_overrides(paths, "DiT-B/2", 64)
    lora, paper = (load_experiment(name, overrides, check_storage=False) for name in ("paper-lora", "paper"))
    assert variant(lora, "full").to_dict() == {**paper.to_dict(), "name": "paper-lora",
                                               "description": variant(lora, "full").description}
    assert variant(lora, "lora-r16").finetune == paper.finetune.replaced(adapter={"kind": "lora", "rank": 16,
                                                                                  "alpha": 16})


def test_a_later_variant_is_compared_with_the_first_on_paired_sets():
    """lora-r4's fine-tune-only set is full's exactly: its difference is 0 with a zero-width interval, which only a
    paired bootstrap (the same indices for both) gives; its DoG set is shifted away from the reference: a positive
    difference whose interval excludes 0. DoG vs CFG stays within each variant."""
    exp = small(finetunes={"full": {}, "lora-r4": LORA4}, report={"seeds": [1], "bootstrap": 50, "controls": False},
                evaluation={"metrics": ["fd_effnet"], "select_by": "fd_effnet"}, sampling={"num_samples": 80})
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (2000, 4))
    reference = SpaceInputs(ReferenceStats(*gaussian_stats(ref), ref[:300].astype(np.float32), 2000, {}))
    base = {m: rng.normal(0, 1, (80, 4)).astype(np.float32) + shift for m, shift in
            (("none", 1.0), ("cfg", 0.8), ("dog", 0.3))}
    sets, rows = {}, []
    for name, moved in (("full", 0.0), ("lora-r4", 0.7)):
        for method, w in (("none", 1.0), ("cfg", 2.0), ("dog", 2.0)):
            features = base[method] + (moved if method == "dog" else 0.0)
            sets[f"{name}/{method}"] = SampleSetCard(["fd_effnet"], {"effnet": features}, {"effnet": reference})
            common = {"dataset": DS, "method": method, "w": w, "num_samples": 80, VARIANT: name}
            rows.append({**common, "phase": "report", "seed": 1, "sample_dir": f"{name}/{method}"})
            rows.append({**common, "phase": "selection", "seed": 0, "sample_dir": "unused",
                         "fd_effnet": {"none": 3, "cfg": 2, "dog": 1}[method]})
    board = variant_leaderboard(exp, runs_frame(rows), lambda row: sets[row["sample_dir"]])
    assert list(dict.fromkeys(board[VARIANT])) == ["full", "lora-r4"]
    lora = board[board[VARIANT] == "lora-r4"].set_index("method")
    assert "fd_effnet_diff_vs_finetune" not in board[board[VARIANT] == "full"].dropna(axis=1, how="all")
    none, dog = lora.loc["none"], lora.loc["dog"]
    assert none["fd_effnet_diff_vs_finetune"] == none["fd_effnet_diff_vs_finetune_low"] == \
        none["fd_effnet_diff_vs_finetune_high"] == 0.0
    assert dog["fd_effnet_diff_vs_finetune_low"] > 0 and dog["fd_effnet_significant_vs_finetune"]
    full_dog = board[(board[VARIANT] == "full") & (board["method"] == "dog")].iloc[0]
    assert dog["fd_effnet_diff_vs_cfg"] == pytest.approx(dog["fd_effnet"] - lora.loc["cfg"]["fd_effnet"])
    assert dog["fd_effnet_diff_vs_finetune"] == pytest.approx(dog["fd_effnet"] - full_dog["fd_effnet"])
    text = variant_markdown(exp, board)
    assert text.index("## fine-tune full") < text.index("## fine-tune lora-r4") < text.index("### lora-r4 minus full")


# -- end to end ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_variants_end_to_end(tiny_experiment):
    """full and a LoRA fine-tune of the tiny experiment: each its own fine-tune, rows and leaderboard block, the LoRA
    rows compared with full's, plots per variant; --finetunes reruns one variant without redoing anything."""
    path, results = tiny_experiment
    config = yaml.safe_load(path.read_text())
    config["finetunes"] = {"full": {}, "lora-r2": {"adapter": {"kind": "lora", "rank": 2, "alpha": 2}}}
    path.write_text(yaml.safe_dump(config))
    assert main(["run", "--exp", str(path), "--results-root", str(results), "--no-progress"]) == 0
    out = results / "tiny"
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert list(runs.columns) == list(RUNS_COLUMNS) and set(runs[VARIANT]) == {"full", "lora-r2"}
    for name in ("full", "lora-r2"):
        mine = runs[runs[VARIANT] == name]
        assert {"none", "cfg", "dog", "real"} <= set(mine["method"]) and set(mine["phase"]) == \
            {"selection", "report", "control"}
    sampled = runs[runs["method"] != "real"]
    assert sampled.groupby(VARIANT)["finetuned_sha256"].nunique().tolist() == [1, 1]
    assert sampled["finetuned_sha256"].nunique() == 2  # two fine-tunes
    assert len(list((out / "folder").glob("finetune-*"))) == 2
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(dict.fromkeys(board[VARIANT])) == ["full", "lora-r2"]
    lora = board[(board[VARIANT] == "lora-r2") & (board["rule"] != "seed noise") & (board["method"] != "real")]
    assert lora["fd_effnet_diff_vs_finetune"].notna().all() and (lora["vs_finetune"] == "full").all()
    assert lora["fd_effnet_diff_vs_finetune_low"].le(lora["fd_effnet_diff_vs_finetune"]).all()
    assert board[board[VARIANT] == "lora-r2"]["fd_effnet_diff_vs_cfg"].notna().any()  # DoG vs CFG within it
    text = (out / "leaderboard.md").read_text()
    assert "## fine-tune full" in text and "### lora-r2 minus full" in text and "LoRA rank 2, alpha 2" in text
    assert "## Fine-tune variants" in (out / "PROTOCOL.md").read_text()
    assert (out / "plots" / "full").is_dir() and (out / "plots" / "lora-r2").is_dir()
    runs_logged = read_wandb_runs(out)  # W&B: the variant in the fine-tunes' names and every run's tags
    fine_tunes = sorted(r["name"] for r in runs_logged if r["job_type"] == "fine-tune")
    assert fine_tunes == ["folder-fine-tune-full", "folder-fine-tune-lora-r2"]
    evaluated = [r for r in runs_logged if r["job_type"] == "evaluate"]
    assert {t for r in evaluated for t in r["tags"] if t.startswith("finetune:")} == {"finetune:full",
                                                                                     "finetune:lora-r2"}
    before = (out / "runs.csv").read_text()
    assert main(["run", "--exp", str(path), "--results-root", str(results), "--no-progress",
                 "--finetunes", "lora-r2"]) == 0
    after = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert len(after) == len(runs) and set(after[VARIANT]) == {"full", "lora-r2"}
    assert before.count("\n") == (out / "runs.csv").read_text().count("\n")
