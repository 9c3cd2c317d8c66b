"""Every setting an experiment names reaches the code that uses it: the fine-tune gets the YAML's training and W&B
settings, the sampler the YAML's sampling settings, the evaluation its metrics (the harness once passed W&B to the
fine-tune as a bare on/off, so the YAML's project and mode never arrived)."""
import pytest
import yaml

import benchmark.harness.stages as stages
import benchmark.training.run as training_run
from benchmark.cli import main
from conftest import run_if

pytestmark = [pytest.mark.usefixtures("one_thread"), run_if(shared_data="caltech101/caltech101_32.npz")]


def test_yaml_settings_arrive_where_they_are_used(tiny_experiment, monkeypatch):
    path, results = tiny_experiment
    config = yaml.safe_load(path.read_text())
    config["tracking"]["wandb"] = {"enabled": True, "mode": "offline", "project": "my-project", "entity": "my-team"}
    config["finetune"].update(precision="tf32", split="all", label_dropout=0.2, seed=3)
    config["sampling"].update(precision="bf16", decode_precision="fp32", compile=False, guided_channels=2,
                              guidance_interval=[100, 800], clip_denoised=False, steps=4)
    config["w_grid"] = [2.0]
    config["methods"] = ["dog"]
    path.write_text(yaml.safe_dump(config))

    seen = {}
    real_train, real_build = training_run.train, stages.build_sampler
    real_loggers = training_run._make_loggers

    def spy_train(net, data, out, settings, launch):
        seen["train"] = (settings, out, launch)
        return real_train(net, data, out, settings, launch)

    def spy_loggers(out_dir, run_id, config, wandb, **kwargs):
        seen["wandb"] = wandb
        return real_loggers(out_dir, run_id, config, wandb, **kwargs)

    def spy_build(settings, method, seed, *args):
        sampler = real_build(settings, method, seed, *args)
        seen.setdefault("samplers", []).append(sampler)
        return sampler

    monkeypatch.setattr(training_run, "train", spy_train)
    monkeypatch.setattr(training_run, "_make_loggers", spy_loggers)
    monkeypatch.setattr(stages, "build_sampler", spy_build)
    assert main(["run", "--exp", str(path), "--results-root", str(results), "--no-progress"]) == 0

    settings, out, launch = seen["train"]
    assert (settings.precision, settings.split, settings.label_dropout, settings.seed) == ("tf32", "all", 0.2, 3)
    assert out.wandb.project == "my-project" and out.wandb.mode == "offline"
    assert seen["wandb"].entity == "my-team" and seen["wandb"].resolved_mode() == "offline"
    assert launch.devices == 1  # one device unless told otherwise
    guided = [s for s in seen["samplers"] if s.denoiser.guided]
    assert guided, "the DoG sample set was built"
    sampler = guided[0]
    assert (sampler.precision, sampler.decode_precision, sampler.clip_denoised) == ("bf16", "fp32", False)
    assert sampler.denoiser.guided_channels == 2
    assert (sampler.denoiser.interval.low, sampler.denoiser.interval.high) == (100.0, 800.0)
    assert sampler.diffusion.num_timesteps == 4
    assert sampler.denoiser.models["pretrained"] is not sampler.denoiser.model  # DoG: the source model guides
