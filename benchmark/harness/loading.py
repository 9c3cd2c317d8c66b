"""Reading an experiment: a YAML file (or a name in ``experiments/``), its ``base:`` chain, and ``key.sub=value``
overrides, validated as one ``Experiment`` before any long work starts.

``base: <name or path>`` starts from another file: mappings merge key by key, lists are replaced, and the derived
file is its own experiment (its name is its own file's unless it says). Override values are parsed as YAML scalars,
so ``w_grid=[1.0,2.0]`` and ``tracking.wandb.enabled=false`` work.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import yaml

from benchmark.errors import ConfigError, did_you_mean
from benchmark.harness.experiment import Experiment
from benchmark.harness.storage import check_storage_url
from benchmark.io import REPO_ROOT
from benchmark.models import DEFAULT_VAE


def experiment_dirs() -> list[Path]:
    """Where ``--exp NAME`` is looked for: ./experiments of the working directory, then the package's."""
    dirs = [Path.cwd() / "experiments", REPO_ROOT / "experiments"]
    return list(dict.fromkeys(d.resolve() for d in dirs if d.is_dir()))


def experiment_names() -> list[str]:
    return sorted({p.stem for d in experiment_dirs() for p in d.glob("*.yaml")})


def find_experiment(path_or_name: str | os.PathLike) -> Path:
    """A YAML path, or a name such as ``paper`` for experiments/paper.yaml."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    for folder in experiment_dirs():
        for candidate in (folder / f"{path_or_name}.yaml", folder / str(path_or_name)):
            if candidate.is_file():
                return candidate
    names = experiment_names()
    raise ConfigError(f"no experiment file {str(path_or_name)!r}{did_you_mean(path.stem, names)}; give a YAML path "
                      f"or one of: {', '.join(names) or '(no experiments/ folder)'}")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where} is not valid YAML ({getattr(e, 'problem', None) or e}); fix the syntax") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({e.strerror or e}); check the path and its permissions") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings (name: ..., datasets: [...]), not {type(data).__name__}")
    return data


def merge(base: dict, over: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _rebase_paths(data: dict, source_dir: Path, target_dir: Path) -> dict:
    """A base file's relative paths are relative to the base file: rewrite them for the derived file's folder."""
    def rebase(text: str) -> str:
        path = Path(text).expanduser()
        if path.is_absolute() or not (source_dir / path).exists():
            return text  # absolute, or a name (a DiT release, a registered VAE) rather than a path
        return os.path.relpath(source_dir / path, target_dir)

    data = dict(data)
    if isinstance(data.get("source"), dict) and isinstance(data["source"].get("checkpoint"), str):
        data["source"] = {**data["source"], "checkpoint": rebase(data["source"]["checkpoint"])}
    for key in ("autoencoder", "data_root"):
        if isinstance(data.get(key), str):
            data[key] = rebase(data[key])
    return data


def read_with_bases(path: Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"'base:' loops through {path}; remove the cycle")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = Path(str(base)).expanduser()
    if not base_path.is_absolute() and (path.parent / base_path).is_file():
        base_path = path.parent / base_path
    base_file = find_experiment(base_path if base_path.is_file() else base).resolve()
    parent = _rebase_paths(read_with_bases(base_file, seen + (path,)), base_file.parent, path.parent)
    parent.pop("name", None)  # a derived file is its own experiment, named after its own file unless it says
    parent.pop("description", None)
    return merge(parent, data)


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.sub=value`` strings; each value is parsed as YAML."""
    data = dict(data)
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {text!r} must be KEY=VALUE, e.g. finetune.steps=100 or datasets=[cub100-32]")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {text!r}: the value is not valid YAML; quote strings, e.g. {key}='a: b'") from None
        parts = key.split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            here = ".".join(parts[: i + 1])
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"cannot set {key!r}: {here} is {child!r}, not a mapping; set {here}=... as a whole")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return data


def experiment_from_dict(data: dict, path: Optional[Path] = None, check_storage: bool = True) -> Experiment:
    """Validate a mapping as an experiment; ``path`` is the file it came from (relative paths are relative to it)."""
    data = dict(data)
    if "datasets" not in data:
        raise ConfigError("the config has no 'datasets'; add e.g. datasets: [caltech101-32] (or datasets=[...] on the "
                          "command line)")
    if data.get("name") is None:
        if path is None:
            raise ConfigError("the config has no 'name'; add name: <results directory name>")
        data["name"] = Path(path).stem
    experiment = Experiment.parse(data)
    experiment._path = Path(path).resolve() if path is not None else None
    spec = experiment.autoencoder_spec()
    if spec != experiment.autoencoder and not Path(spec).is_dir():
        raise ConfigError(f"autoencoder={experiment.autoencoder!r} is not a folder ({spec} does not exist); give a "
                          f"diffusers AutoencoderKL folder (relative to the experiment file) or {DEFAULT_VAE}")
    if check_storage and experiment.sweep.storage:
        check_storage_url(experiment.sweep.storage)
    return experiment


def load_experiment(path_or_name: str | os.PathLike, overrides: Sequence[str] = (), check_storage: bool = True) -> Experiment:
    """Read, override and validate an experiment. ``path_or_name``: a YAML path, or a name in experiments/.

    ``check_storage`` connects to an explicit ``sweep.storage`` (a few seconds at most) so that an unreachable
    database fails now rather than after fine-tuning.
    """
    path = find_experiment(path_or_name)
    data = apply_overrides(read_with_bases(path), list(overrides))
    return experiment_from_dict(data, path=path, check_storage=check_storage)
