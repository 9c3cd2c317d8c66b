"""The experiment config: the shipped YAMLs load, overrides apply, and every mistake is one line naming the fix."""
import pytest

from benchmark.errors import ConfigError
from benchmark.guidance import resolve_method
from benchmark.harness.experiment import Experiment
from benchmark.harness.identity import stage_config, stage_hash
from benchmark.harness.methods import run_spec
from benchmark.harness.loading import experiment_from_dict, experiment_names, load_experiment
from benchmark.harness.storage import check_storage_url
from benchmark.io import config_hash

PAPER_DATASETS = ["food101", "sun397", "df20mini", "caltech101", "cub200", "artbench10", "stanford_cars"]


def expect_error(match, *args, **kwargs):
    """load_experiment(*args) must raise one ConfigError line that contains ``match``."""
    with pytest.raises(ConfigError) as info:
        load_experiment(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert match in message, message
    return message


def small(**changes):
    data = {"name": "t", "datasets": ["caltech101-32"], "autoencoder": "identity",
            "source": {"checkpoint": "x.pt", "model": "DiT-N/2", "num_classes": 10, "image_size": 32}}
    data.update(changes)
    return experiment_from_dict(data)


# -- the shipped experiments ------------------------------------------------------------------------------------


def test_shipped_experiments_load():
    assert {"paper", "default", "mini", "mini-gpu"} <= set(experiment_names())
    paper = load_experiment("paper")
    assert paper.datasets == PAPER_DATASETS
    assert (paper.source.model, paper.source.num_classes, paper.source.image_size) == ("DiT-XL/2", 1000, 256)
    assert paper.autoencoder == "sd-vae-ft-ema"
    ft = paper.finetune
    assert (ft.steps, ft.global_batch_size, ft.lr, ft.weight_decay, ft.ema_decay, ft.label_dropout) == (24000, 32, 1e-4, 0.0, 0.9999, 0.1)
    assert (paper.sampling.steps, paper.sampling.num_samples) == (50, 10000)
    assert paper.evaluation.metrics == ["fid", "fd_dinov2"]
    assert paper.w_values() == [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1, 2.2, 2.3, 2.4, 2.5]
    # none once, cfg and dog at the 15 guided w, per dataset
    assert len(paper.selection_runs()) == 7 * (1 + 2 * 15)
    assert paper.report.fixed_w == [1.5] and not set(paper.report.seeds) & set(paper.selection.seeds)

    default = load_experiment("default")
    assert default.datasets == ["caltech101-32"] and default.autoencoder == "identity"
    assert "fd_effnet" in default.evaluation.metrics and "prdc_effnet" in default.evaluation.metrics

    mini = load_experiment("mini-gpu")  # `base: default` plus changes
    assert mini.name == "mini-gpu" and mini.source == default.source
    assert mini.datasets == ["caltech101-32", "cub100-32"]
    assert mini.sampling.num_samples == 10000 and mini.w_values() == paper.w_values()
    assert mini.evaluation.metrics == default.evaluation.metrics and mini.evaluation.batch_size == 500


def test_path_name_and_unknown_name(tmp_path):
    assert load_experiment("experiments/default.yaml").name == "default"
    expect_error("did you mean 'paper'", "pape")


def test_name_defaults_to_file_stem_and_defaults_are_the_paper_protocol(tmp_path):
    path = tmp_path / "my-run.yaml"
    path.write_text("datasets: [cub100-32]\n")
    exp = load_experiment(path)
    assert exp.name == "my-run" and exp.results_dir(tmp_path) == tmp_path / "my-run"
    assert exp.finetune.steps == 24000 and exp.methods == ["none", "cfg", "dog"]
    assert exp.selection.seeds == [0] and exp.report.seeds == [1]


# -- overrides ----------------------------------------------------------------------------------------------------


def test_overrides_are_parsed_as_yaml():
    exp = load_experiment("default", ["finetune.steps=100", "datasets=[cub100-32]", "w_grid=[2.0, 1.0, 1.5, 1.5]",
                                      "tracking.wandb.enabled=false", "finetune.lr=1e-3", "datasets=cub100-32",
                                      "sampling.guidance_interval=[0, 700]", "source.model={depth: 2, hidden_size: 64, num_heads: 2}"])
    assert exp.finetune.steps == 100
    assert exp.datasets == ["cub100-32"]
    assert exp.w_values() == [1.0, 1.5, 2.0]  # sorted, duplicates dropped
    assert exp.tracking.wandb.enabled is False
    assert exp.finetune.lr == 1e-3  # YAML reads "1e-3" as a string; the config accepts it as a number
    assert exp.datasets == ["cub100-32"]  # a scalar for a list field is a list of one
    assert exp.sampling.guidance_interval == [0.0, 700.0]
    assert exp.source.model == {"depth": 2, "hidden_size": 64, "num_heads": 2}


def test_bad_override_syntax():
    expect_error("KEY=VALUE", "default", ["finetune.steps"])
    expect_error("not a mapping", "default", ["source.model.depth=3"])  # model is a name there, not a dict


# -- one-line errors ----------------------------------------------------------------------------------------------


def test_unknown_keys_suggest_the_right_one():
    expect_error("did you mean 'finetune.steps'", "default", ["finetune.stepz=3"])
    expect_error("did you mean 'datasets'", "default", ["dataset=[cub100-32]"])
    expect_error("did you mean 'tracking.wandb.project'", "default", ["tracking.wandb.projekt=x"])
    expect_error("unknown config key 'sampling.foo'", "default", ["sampling.foo=1"])


def test_unknown_dataset_metric_method_and_model():
    expect_error("did you mean 'caltech101-32'", "default", ["datasets=[caltech-32]"])
    expect_error("did you mean 'fd_dinov2'", "default", ["evaluation.metrics=[fid, fd_dino]"])
    expect_error("did you mean 'cfg'", "default", ["methods=[none, cfgg]"])
    expect_error("did you mean 'DiT-XL/2'", "default", ["source.model=DiT-XL-2"])
    expect_error("source.model: unknown DiT argument 'dept'", "default", ["source.model={dept: 2}"])
    expect_error("did you mean 'sd-vae-ft-ema'", "default", ["autoencoder=sd-vae-ft-emma"])
    expect_error("not produced by", "default", ["evaluation.select_by=fid"])  # default has fd_effnet + prdc only


@pytest.mark.parametrize("override, match", [
    ("w_grid=[1.0, 25]", "outside [0.0, 20.0]"),
    ("w_grid=[.nan]", "outside [0.0, 20.0]"),
    ("w_grid=[-1.0]", "outside [0.0, 20.0]"),
    ("w_grid={start: 1.0, stop: 30, step: 1}", "w_grid.stop"),
    ("w_grid={start: 2.0, stop: 1.0, step: 0.1}", "swap them"),
    ("w_grid={start: 1.0, stop: 2.0, step: 0}", "w_grid.step=0 must be > 0"),
    ("w_grid={start: 1.0, stop: 2.0}", "w_grid.step is required"),
    ("w_grid={start: 1.0, stop: 2.0, stpe: 0.1}", "did you mean 'w_grid.step'"),
    ("w_grid=[1.0, abc]", "is not a number"),
    ("sweep.w_range=[1.0, 99]", "sweep.w_range"),
])
def test_guidance_scales_out_of_range(override, match):
    expect_error(match, "default", [override])


@pytest.mark.parametrize("override, match", [
    ("sampling.num_samples=0", "sampling.num_samples=0 must be >= 1"),
    ("finetune.steps=-5", "finetune.steps=-5 must be >= 1"),
    ("finetune.global_batch_size=2.5", "finetune.global_batch_size: must be a whole number"),
    ("finetune.steps=1e4x", "finetune.steps: must be a whole number, got '1e4x'"),
    ("sweep.trials=0", "sweep.trials=0 must be >= 1"),
    ("report.seeds=[]", "report.seeds: is empty"),
    ("report.seeds=[1, 1]", "lists a seed twice"),
    ("selection.seeds=[]", "selection.seeds: is empty"),
    ("report.seeds=[0, 1]", "share seed(s) [0]"),
    ("report.fixed_w=[25]", "report.fixed_w[0]: guidance scale w=25.0 is outside [0.0, 20.0]"),
    ("report.level=1.5", "report.level=1.5 must be < 1"),
    ("report.bootstrap=0", "report.bootstrap=0 must be >= 1"),
    ("seeds=[0]", "now two lists that share no seed: selection.seeds"),
    ("evaluation.reference=some", "evaluation.reference='some' is not one of all, subsample"),
    ("finetune.lr=0", "finetune.lr=0 must be > 0"),
    ("finetune.lr=.inf", "finetune.lr: must be a finite number"),
    ("finetune.ema_decay=1.0", "finetune.ema_decay=1.0 must be < 1"),
    ("finetune.num_workers=-1", "finetune.num_workers=-1 must be >= 0"),
    ("finetune.precision=bf16-true", "finetune.precision: 'bf16-true' is not supported"),
    ("finetune.precision=fp33", "did you mean 'fp32'"),
    ("sampling.precision=int8", "sampling.precision='int8' is not one of fp32, tf32, bf16"),
    ("sampling.guidance_interval=[5]", "LOW,HIGH"),
    ("sampling.guidance_interval=[700, 100]", "empty or negative"),
    ("sampling.clip_denoised=maybe", "must be true or false"),
    ("name=a/b", "directory name"),
])
def test_bad_values(override, match):
    expect_error(match, "default", [override])


def test_vae_needs_multiple_of_8_and_yaml_errors_name_the_line(tmp_path):
    expect_error("multiple of 8", "paper", ["source.image_size=100"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [cub100-32\nname: x\n")
    expect_error("not valid YAML", bad)
    expect_error("no 'datasets'", *[_write(tmp_path / "empty.yaml", "name: x\n")])


def _write(path, text):
    path.write_text(text)
    return path


# -- Optuna storage -------------------------------------------------------------------------------------------------


def test_storage_urls(tmp_path):
    check_storage_url(f"sqlite:///{tmp_path}/new/dir/sweep.db")  # creatable
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not a writable directory"):
        check_storage_url(f"sqlite:///{blocker}/sweep.db")
    with pytest.raises(ConfigError, match="postgresql://"):
        check_storage_url("postgres://u@localhost/db")
    with pytest.raises(ConfigError, match="unsupported scheme"):
        check_storage_url("redis://localhost")
    # a server that is not there (port 1 refuses at once), or a missing driver: either way one line, password hidden
    with pytest.raises(ConfigError) as info:
        check_storage_url("postgresql://user:secret@127.0.0.1:1/optuna", timeout_s=2)
    assert "secret" not in str(info.value) and "\n" not in str(info.value)
    assert "cannot connect" in str(info.value) or "driver" in str(info.value)
    # the connect path, with a server that refuses (no database driver is installed here)
    import sqlalchemy

    class Refusing:
        def connect(self):
            raise OSError("connection refused\nsecond line")

        def dispose(self):
            pass

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlalchemy, "create_engine", lambda url, **kw: Refusing())
        with pytest.raises(ConfigError) as info:
            check_storage_url("mysql://user:secret@db.example:3306/optuna")
    message = str(info.value)
    assert "cannot connect" in message and "connection refused" in message and "sweep.storage=null" in message
    assert "secret" not in message and "\n" not in message
    # checked at load time when the config names a storage
    expect_error("not a writable directory", "default", [f"sweep.storage=sqlite:///{blocker}/x.db"])
    assert load_experiment("default", [f"sweep.storage=sqlite:///{blocker}/x.db"], check_storage=False)


def test_default_storage_is_sqlite_in_results(tmp_path):
    exp = load_experiment("default")
    assert exp.sweep_storage(tmp_path) == f"sqlite:///{tmp_path.resolve()}/default/sweep.db"
    assert exp.sweep_w_range() == (1.0, 3.0)
    assert load_experiment("default", ["sampling.num_samples=100"]).sweep_num_samples() == 100


# -- what runs, and what each stage's output depends on --------------------------------------------------------------


def test_w_values_from_a_range_are_exact_and_include_stop():
    exp = small(w_grid={"start": 1.0, "stop": 2.0, "step": 0.25})
    assert exp.w_values() == [1.0, 1.25, 1.5, 1.75, 2.0]
    exp = small(w_grid={"start": 0.0, "stop": 0.3, "step": 0.1})  # 0.1 * 3 = 0.30000000000000004
    assert exp.w_values() == [0.0, 0.1, 0.2, 0.3]
    exp = small(w_grid={"start": 1.0, "stop": 1.95, "step": 0.5})  # stop not on the grid: not passed
    assert exp.w_values() == [1.0, 1.5]


def run(method, w=None, seed=0, **params):
    spec = resolve_method(method, {**({"w": w} if w is not None else {}), **params})
    return run_spec("caltech101-32", method, spec, seed)


def test_runs_share_w1():
    exp = small(w_grid=[1.0, 1.5], selection={"seeds": [0, 1]}, report={"seeds": [2]})
    runs = exp.selection_runs()
    assert runs.count(run("none")) == 1
    assert {r.method for r in runs if r.w == 1.0} == {"none"}
    assert len(runs) == 2 * 3  # (none at 1.0, cfg at 1.5, dog at 1.5) x 2 seeds
    assert run("dog", 1.0).method == "none" and run("dog", 1.5).method == "dog"  # w = 1 is the unguided set
    # w = 1 is sampled even when only guided methods are compared: it is their w = 1 point
    assert {r.method for r in small(methods=["cfg"], w_grid=[1.0, 2.0]).selection_runs()} == {"none", "cfg"}


def test_stage_configs_separate_what_changes_what():
    base = small(w_grid=[1.0, 2.0])
    more_samples = small(w_grid=[1.0, 2.0], sampling={"num_samples": 50})
    longer = small(w_grid=[1.0, 2.0], finetune={"steps": 10})
    other_rule = small(w_grid=[1.0, 2.0], evaluation={"select_by": "fd_dinov2"})
    other_channels = small(w_grid=[1.0, 2.0], sampling={"guided_channels": None})
    ds = "caltech101-32"
    point = dict(run=run("dog", 2.0))

    other_precision = small(w_grid=[1.0, 2.0], sampling={"precision": "bf16"})

    def h(exp, stage, **kw):
        return stage_hash(exp, stage, ds, **kw)

    assert h(base, "finetune") == h(more_samples, "finetune")
    assert h(base, "sample", **point) != h(more_samples, "sample", **point)
    assert h(base, "finetune") != h(longer, "finetune")
    assert h(base, "sample", **point) != h(longer, "sample", **point)
    assert h(base, "evaluate", **point) == h(other_rule, "evaluate", **point)
    assert h(base, "latents") == h(longer, "latents")
    assert h(base, "finetune") == h(other_precision, "finetune")
    assert h(base, "sample", **point) != h(other_precision, "sample", **point)
    faster = small(w_grid=[1.0, 2.0], sampling={"batch_size": 7, "compile": True}, evaluation={"batch_size": 3},
                   finetune={"num_workers": 0, "checkpoint_every": 3})
    assert h(base, "evaluate", **point) == h(faster, "evaluate", **point)
    # w = 1 is one sample set whatever the method, untouched by guidance-only settings
    none = stage_config(base, "sample", ds, run=run("none"))
    assert stage_config(base, "sample", ds, run=run("cfg", 1.0)) == none
    assert stage_config(other_channels, "sample", ds, run=run("dog", 1)) == none
    assert h(base, "sample", **point) != h(other_channels, "sample", **point)
    assert h(base, "sample", **point) != h(base, "sample", run=run("cfg", 2.0))
    # a method's other parameters are part of its samples' identity
    assert h(base, "sample", **point) != h(base, "sample", run=run("dog", 2.0, eta=0.0))
    assert stage_config(base, "sample", ds, run=run("dog", 2.0))["method"] == "dog"  # as it always was
    with pytest.raises(ValueError):
        stage_config(base, "sample", ds)  # needs a sample set


def test_to_dict_round_trips():
    exp = load_experiment("mini-gpu", ["report.seeds=[4, 5]"])
    again = experiment_from_dict(exp.to_dict(), path=exp.path)
    assert again == exp and config_hash(again.to_dict()) == config_hash(exp.to_dict())
    assert config_hash(load_experiment("mini-gpu").to_dict()) != config_hash(exp.to_dict())


def test_experiment_built_in_code_is_validated():
    exp = Experiment.parse(dict(name="x", datasets=["cub100-32"], finetune={"steps": 7},
                                tracking={"wandb": {"mode": "offline"}}))
    assert exp.finetune.steps == 7 and exp.tracking.wandb.mode == "offline"
    with pytest.raises(ConfigError, match="did you mean 'finetune.steps'"):
        Experiment.parse(dict(name="x", datasets=["cub100-32"], finetune={"step": 7}))
    with pytest.raises(ValueError):  # assignment is validated too
        exp.finetune.steps = 0


def test_base_chain_and_cycle(tmp_path):
    child = _write(tmp_path / "child.yaml", "base: default\ndatasets: [cub100-32]\nfinetune: {steps: 5}\n")
    exp = load_experiment(child)
    assert exp.name == "child" and exp.datasets == ["cub100-32"]
    assert exp.finetune.steps == 5 and exp.finetune.ema_decay == load_experiment("default").finetune.ema_decay
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\ndatasets: [cub100-32]\n")
    expect_error("loops", tmp_path / "a.yaml")


@pytest.mark.parametrize("name", ["default", "mini"])
def test_selection_and_report_samples_share_no_noise_draw(name):
    from benchmark.harness.leaderboard import noise_seeds
    from benchmark.sampling import sample_seed

    exp = load_experiment(name)
    selection = {sample_seed(s, i) for s in exp.selection.seeds for i in range(exp.selection_num_samples())}
    report_seeds = set(exp.report.seeds) | set(noise_seeds(exp))
    report = {sample_seed(s, i) for s in report_seeds for i in range(exp.sampling.num_samples)}
    assert len(selection) == len(exp.selection.seeds) * exp.selection_num_samples()  # no collision within either
    assert not selection & report


@pytest.mark.parametrize("override, match", [
    ("methods=[none, cfg, dogg]", "unknown guidance method 'dogg'; did you mean 'dog'?"),
    ("methods=[{name: cfg+dog, grid: {w_cfg: [1.0, 25]}}]", "w_cfg=25 is outside [0, 20]"),
    ("methods=[{name: dog, params: {etaa: 0}}]", "has no parameter 'etaa'; did you mean 'eta'?"),
    ("methods=[autoguidance]", "guide model 'weak' has no source"),
    ("methods=[{name: autoguidance, guides: {weak: {step: 300}}}]", "not earlier than the fine-tune's 300 steps"),
    ("methods=['nomodule.x:rule']", "module 'nomodule.x' does not import"),
    ("methods=[dog, dog]", "named twice"),
    ("methods=[]", "methods: is empty"),
    ("methods=[none, cfg, dog, {name: nomodule.x:rule}]", "methods[3].name: guidance method 'nomodule.x:rule': module "
                                                         "'nomodule.x' does not import"),  # the dict form: the cause
    ("methods=[none, nomodule.x:rule]", "methods[1]: guidance method 'nomodule.x:rule': module 'nomodule.x'"),
])
def test_bad_methods_are_one_line_errors_before_any_work(override, match):
    expect_error(match, "default", [override])


# Every list of an experiment that must hold at least one item, and the line an empty one gives (the schema's
# non_empty check). An empty w_grid once silently dropped CFG and DoG and sampled fine-tune only.
NON_EMPTY_LISTS = [
    ("datasets=[]", "datasets: is empty; give at least one value, e.g. datasets=[caltech101-32]"),
    ("methods=[]", "methods: is empty; give at least one value, e.g. methods=[none, cfg, dog]"),
    ("w_grid=[]", "w_grid: is empty; give at least one value, e.g. w_grid=[1.0, 1.5, 2.0]"),
    ("selection.seeds=[]", "selection.seeds: is empty; give at least one value, e.g. selection.seeds=[0]"),
    ("report.seeds=[]", "report.seeds: is empty; give at least one value, e.g. report.seeds=[1]"),
    ("evaluation.metrics=[]", "evaluation.metrics: is empty"),
    ("methods=[none, {name: cfg, grid: {w: []}}]", "methods[1].grid.w: is empty; give at least one value"),
    ("methods=[{name: cfg+dog, grid: {w_cfg: [1.5], w_dog: []}}]", "methods[0].grid.w_dog: is empty"),
    ("sweep.w_range=[]", "sweep.w_range: must be [low, high]"),
    ("sampling.guidance_interval=[]", "must be two numbers LOW,HIGH"),
]


@pytest.mark.parametrize("override, match", NON_EMPTY_LISTS, ids=[o.split("=")[0] + ("-grid" if "grid" in o else "")
                                                                  for o, _ in NON_EMPTY_LISTS])
def test_every_list_that_must_not_be_empty_is_checked(override, match):
    expect_error(match, "default", [override])


def test_lists_that_may_be_empty_stay_allowed():
    exp = load_experiment("default", ["report.fixed_w=[]", "finetune.keep_ema_at=[]"])
    assert exp.report.fixed_w == [] and exp.finetune.keep_ema_at == []


def test_methods_with_parameters_and_grids():
    exp = load_experiment("default", ["methods=[none, dog, {name: cfg+dog, grid: {w_cfg: [1.0, 2.0], w_dog: [1.0, 1.5]}},"
                                      " {name: dog, label: dog-apg, params: {eta: 0.0}},"
                                      " {name: autoguidance, guides: {weak: {step: 150}}, grid: {w: [2.0]}}]"])
    runs = exp.selection_runs()
    by = {(r.method, r.w if r.w == r.w else None, r.params) for r in runs}
    assert ("cfg+dog", None, "w_cfg=2 w_dog=1.5") in by and ("dog-apg", 1.5, "eta=0") in by
    assert ("autoguidance", 2.0, "") in by
    assert sum(r.method == "none" for r in runs) == 1  # every unguided grid point is the one fine-tune-only set
    assert exp.unguided_methods() == {"none", "dog", "cfg+dog", "dog-apg"}
