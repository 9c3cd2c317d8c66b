"""One identity per output: what a setting is to an output is declared on its field, and the sample folder's name,
runs.csv's config_hash, the metric caches and run.json all follow from those marks; a method's parameters are folded
into its spec in one place (a fixed-w row keeps the method's own interval); a user's rule is identified by its code;
the training entry points take settings objects; the VAE's name and the strategy are declared once."""
import importlib
import inspect
import io
import json
import sys
import tokenize
from pathlib import Path
from typing import Optional

import pytest
import yaml
from pydantic import Field, create_model

import benchmark
from benchmark.cli import main
from benchmark.guidance import lookup_method, resolve_method
from benchmark.harness import experiment as experiment_module
from benchmark.harness.identity import stage_config, stage_hash
from benchmark.harness.leaderboard import report_plan
from benchmark.harness.loading import experiment_from_dict
from benchmark.harness.methods import run_spec
from benchmark.harness.stages import DatasetContext, sample_folder
from benchmark.models import DEFAULT_VAE, export_checkpoint, reheaded
from benchmark.sampling import SamplingSettings, method_spec, sampler_identity
from benchmark.settings import ADDED, HOW, Settings, identity
from benchmark.training import LaunchSettings, StrategySettings
from conftest import run_if

DS = "caltech101-32"


def small(**changes):
    data = {"name": "t", "datasets": [DS], "autoencoder": "identity", "w_grid": [1.0, 2.0],
            "source": {"checkpoint": "x.pt", "model": "DiT-N/2", "num_classes": 10, "image_size": 32}}
    data.update(changes)
    return experiment_from_dict(data)


def folder_name(exp, run, tmp_path) -> str:
    """The sample folder a `dogbench run` of ``exp`` gives ``run`` (a fine-tune file stands in for the model)."""
    finetuned = tmp_path / "ema.pt"
    finetuned.write_bytes(b"weights")
    ctx = DatasetContext(exp, DS, tmp_path / "results", "cpu", finetuned_path=finetuned)
    return sample_folder(ctx, run).root.name


# -- the marks --------------------------------------------------------------------------------------------------


class Inner(Settings):
    size: int = 3
    workers: int = Field(2, json_schema_extra=identity(HOW))


class Outer(Settings):
    depth: int = 1
    batch: int = Field(8, json_schema_extra=identity(HOW))
    inner: Inner = Inner()
    late: Optional[int] = Field(None, json_schema_extra=identity(ADDED))


def test_identity_follows_the_marks_on_the_fields():
    assert Outer().identity() == {"depth": 1, "inner": {"size": 3}}  # HOW left out, also in a nested section
    assert Outer(batch=64, inner=Inner(workers=9)).identity() == Outer().identity()
    assert Outer(late=5).identity() == {**Outer().identity(), "late": 5}  # an added field: only once it is set
    assert Outer(depth=2).identity() != Outer().identity()


# -- sample folders and hashes ----------------------------------------------------------------------------------


def test_a_declared_image_changing_sampling_field_changes_the_folder_and_the_hash(tmp_path):
    # a sampling setting declared tomorrow (e.g. a sampler's eta) enters every identity without being listed anywhere
    Extended = create_model("Extended", __base__=SamplingSettings, ddim_eta=(float, 0.0))
    base = small()
    run = run_spec(DS, "cfg", base.grid("cfg")[-1], 0)

    def with_sampling(**values):
        return base.model_copy(update={"sampling": Extended(**{**base.sampling.to_dict(), **values})})

    plain, other = with_sampling(), with_sampling(ddim_eta=0.5)
    assert folder_name(plain, run, tmp_path) != folder_name(other, run, tmp_path)
    assert stage_hash(plain, "evaluate", DS, run=run) != stage_hash(other, "evaluate", DS, run=run)
    identity = sampler_identity(other.sampling, run.spec, 0, finetuned_sha256="f", pretrained_sha256=None,
                                autoencoder="identity")
    assert identity["ddim_eta"] == 0.5  # recorded in the manifest


@pytest.mark.parametrize("change", [{"batch_size": 7}, {"num_samples": 50}, {"compile": True}])
def test_batch_size_and_sample_count_keep_the_folder(tmp_path, change):
    base, changed = small(), small(sampling={**small().sampling.to_dict(), **change})
    for label in ("none", "cfg"):
        run = run_spec(DS, label, base.grid(label)[-1], 0)
        assert folder_name(base, run, tmp_path) == folder_name(changed, run, tmp_path)
    if "num_samples" not in change:  # the sample count is part of the scores (runs.csv), not of the folder
        assert stage_hash(base, "evaluate", DS, run=run) == stage_hash(changed, "evaluate", DS, run=run)


def test_guided_only_settings_leave_the_unguided_set_alone(tmp_path):
    base, other = small(), small(sampling={"guided_channels": 2})
    none, cfg = (run_spec(DS, label, base.grid(label)[-1], 0) for label in ("none", "cfg"))
    assert folder_name(base, none, tmp_path) == folder_name(other, none, tmp_path)
    assert folder_name(base, cfg, tmp_path) != folder_name(other, cfg, tmp_path)


# -- one fold of a method's parameters --------------------------------------------------------------------------


OWN_INTERVAL = {"methods": ["none", "cfg", {"name": "dog", "label": "dog-int", "params": {"interval": [0, 500]}}],
                "report": {"seeds": [1], "fixed_w": [1.5]}}


def test_a_fixed_w_row_keeps_the_methods_own_interval(tmp_path):
    exp = small(**OWN_INTERVAL)
    plan = {(label, rule): spec for label, rule, spec in report_plan(exp, DS, {(DS, "dog-int"): (2.0, "t_low=0 t_high=500")})}
    fixed, best = plan[("dog-int", "w=1.5")], plan[("dog-int", "best w")]
    assert (fixed.interval.low, fixed.interval.high) == (best.interval.low, best.interval.high) == (0, 500)
    assert fixed.params["w"] == 1.5
    (tmp_path / "ema.pt").write_bytes(b"weights")
    ctx = DatasetContext(exp, DS, tmp_path / "results", "cpu", finetuned_path=tmp_path / "ema.pt")
    ctx.pretrained_sha256 = lambda: "p"  # no source model needed to name the folder
    for spec in (fixed, best):  # the manifest of each sample set of the method records its interval
        folder = sample_folder(ctx, run_spec(DS, "dog-int", spec, 1)).open()
        manifest = json.loads((folder.root / "manifest.json").read_text())
        assert manifest["config"]["guidance_interval"] == [0, 500] and manifest["config"]["method"] == "dog"
    # the sweep's trials and the grid fold the same way
    assert exp.method_spec("dog-int", {"w": 2.2}).interval == fixed.interval
    assert all(s.interval == fixed.interval for s in exp.grid("dog-int") if s.guided)


def test_the_fold_takes_the_settings_interval_once():
    spec = method_spec("dog", {"eta": 0.0}, {"w": 2.0}, interval=[100, 600])
    assert (spec.interval.low, spec.interval.high, spec.params["eta"], spec.params["w"]) == (100, 600, 0.0, 2.0)
    assert method_spec("none", values={"w": 1.0}, interval=[100, 600]) == resolve_method("none")
    with pytest.raises(ValueError, match="give the guidance interval once"):
        method_spec("dog", {"interval": [0, 500]}, {"w": 2.0}, interval=[100, 600])
    with pytest.raises(ValueError, match="no guidance scale w"):
        method_spec("none", values={"w": 2.0})


# -- a user's rule is its code ----------------------------------------------------------------------------------


RULE = '''from benchmark.guidance import Guide, Method, scale_param

def rule(eps, deltas, params):
    return eps + (params["w"] - 1.0) * deltas["uncond"] * SCALE

SCALE = {scale}
mine = Method("mine", rule, guides=(Guide("uncond", "finetuned", "null"),), params=(scale_param("w"),))
'''


def write_rule(folder: Path, scale: float) -> None:
    (folder / "my_rules.py").write_text(RULE.format(scale=scale))
    sys.modules.pop("my_rules", None)  # as a new process would: the edited file is imported again
    importlib.invalidate_caches()


def test_an_edited_rule_is_another_method(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_rule(tmp_path, 1.0)
    before = resolve_method("my_rules:mine", w=2.0).identity()
    assert lookup_method("my_rules:mine")[0].name == "mine" and len(before["code_sha256"]) == 64
    write_rule(tmp_path, 0.5)
    after = resolve_method("my_rules:mine", w=2.0).identity()
    assert after["code_sha256"] != before["code_sha256"]
    assert {k: v for k, v in after.items() if k != "code_sha256"} == {k: v for k, v in before.items()
                                                                       if k != "code_sha256"}
    sys.modules.pop("my_rules", None)


def test_dogbench_sample_says_an_edited_rule_is_another_config(tmp_path, monkeypatch, tiny_dit, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    export_checkpoint(reheaded(tiny_dit, 3, seed=1), tmp_path / "ft.pt", autoencoder="identity")
    command = ["sample", "--finetuned", str(tmp_path / "ft.pt"), "--method", "my_rules:mine", "--w", "2",
               "--num-samples", "2", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "out")]
    write_rule(tmp_path, 1.0)
    assert main(command) == 0
    capsys.readouterr()
    write_rule(tmp_path, 0.5)
    assert main(command) == 1  # not "0 new samples (2/2 done)": the folder holds the old rule's images
    assert "differs in code_sha256" in capsys.readouterr().err
    assert main(command + ["--overwrite"]) == 0
    sys.modules.pop("my_rules", None)


# -- settings objects, one declaration each ---------------------------------------------------------------------


def test_no_public_training_function_takes_more_than_8_parameters():
    import benchmark.training as training

    checked = []
    for info in Path(training.__file__).parent.glob("*.py"):
        module = importlib.import_module(f"benchmark.training.{info.stem}" if info.stem != "__init__" else
                                         "benchmark.training")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("_") and fn.__module__ == module.__name__:
                checked.append(name)
                assert len(inspect.signature(fn).parameters) <= 8, f"{module.__name__}.{name}"
    assert {"finetune", "pretrain", "train"} <= set(checked)


def _string_literals(path: Path) -> list[str]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [t.string.strip("\"'") for t in tokens if t.type == tokenize.STRING]


def test_the_vae_name_is_declared_once():
    package = Path(benchmark.__file__).parent
    found = {str(p.relative_to(package)): _string_literals(p).count(DEFAULT_VAE) for p in package.rglob("*.py")}
    assert {p: n for p, n in found.items() if n} == {"models/autoencoder.py": 1}


def test_the_strategy_is_declared_once():
    assert issubclass(LaunchSettings, StrategySettings) and issubclass(experiment_module.Launch, StrategySettings)
    assert "strategy" not in LaunchSettings.__annotations__ and "strategy" not in experiment_module.Launch.__annotations__
    with pytest.raises(ValueError, match="torchrun"):
        small(launch={"strategy": "ddp_spawn"})


def test_finetune_flags_come_from_the_source_settings(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    for flag in ("--source", "--model", "--source-classes", "--image-size", "--autoencoder", "--vae", "--strategy"):
        assert flag in text
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "--no-learn-sigma" in capsys.readouterr().out


def test_stage_configs_are_the_layers_identities():
    exp = small(**OWN_INTERVAL)
    run = run_spec(DS, "dog-int", exp.grid("dog-int")[-1], 0)
    config = stage_config(exp, "evaluate", DS, run=run, num_samples=20)
    assert config["finetune"] == exp.finetune.identity() and config["source"] == exp.source.identity()
    assert config["sampling"] == exp.sampling.identity_for(run.spec)
    assert config["sampling"]["guidance_interval"] == [0, 500]
    assert config["evaluation"] == {**exp.evaluation.identity_for(20), "num_samples": 20}


@pytest.mark.slow  # `dogbench run` of the tiny experiment, twice
@run_if(shared_data="caltech101/caltech101_32.npz")
def test_done_when_own_interval_fixed_w_and_an_edited_rule_through_dogbench_run(tiny_experiment, tmp_path,
                                                                                monkeypatch):
    """Issue 18's bar, from a fresh working directory: every sample set of a method with its own interval carries
    it (the fixed-w row's too), and editing a user's rule makes new samples while everything else is reused."""
    path, _ = tiny_experiment
    rules = tmp_path / "rules"
    rules.mkdir()
    monkeypatch.syspath_prepend(str(rules))
    write_rule(rules, 1.0)
    config = yaml.safe_load(path.read_text())
    config["methods"] = ["none", {"name": "dog", "label": "dog-int", "params": {"interval": [0, 500]}},
                         {"name": "my_rules:mine", "label": "mine", "grid": {"w": [2.0]}}]
    config["report"] = {"seeds": [1], "fixed_w": [1.5], "bootstrap": 20}
    path.write_text(yaml.safe_dump(config))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    monkeypatch.delenv("DOGBENCH_RESULTS")  # the default: ./results of the working directory

    def sample_sets():
        manifests = (fresh / "results" / "tiny" / "folder" / "samples").glob("*/manifest.json")
        return {p.parent.name: (json.loads(p.read_text())["config"],
                                {png.name: png.stat().st_mtime_ns for png in p.parent.rglob("*.png")})
                for p in manifests}

    assert main(["run", "--exp", str(path), "--no-progress"]) == 0
    first = sample_sets()
    dog = [config for config, _ in first.values() if config["method"] == "dog"]
    assert {config["w"] for config in dog} >= {1.5, 2.0}  # the selection's w = 2 and the fixed-w row's 1.5
    assert all(config["guidance_interval"] == [0, 500] for config in dog)
    write_rule(rules, 0.5)
    assert main(["run", "--exp", str(path), "--no-progress"]) == 0
    second = sample_sets()
    new = {name: config for name, (config, _) in second.items() if name not in first}
    assert new and all(config["method"] == "mine" for config in new.values())
    old_code = {config["code_sha256"] for config, _ in first.values() if config["method"] == "mine"}
    assert old_code and not old_code & {config["code_sha256"] for config in new.values()}
    assert all(second[name][1] == stamp for name, (_, stamp) in first.items())  # the rest is reused as it was
    sys.modules.pop("my_rules", None)
