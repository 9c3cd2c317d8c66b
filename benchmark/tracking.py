"""Weights & Biases settings and the choice of mode, shared by training (its loss curves) and the harness (its
sample sets and leaderboard). W&B is a record, never a requirement: a failure is one warning line.

``WandbRun`` says where a training run's W&B run is filed when a caller files it with others: the harness puts the
fine-tune beside the experiment's other W&B runs (``results/<exp>/wandb/``), in the experiment's group.

Mode ``auto`` logs online when credentials exist ($WANDB_API_KEY, or the netrc entry that ``wandb login`` writes)
and offline otherwise; $WANDB_MODE, when set, decides instead.
"""
from __future__ import annotations

import netrc
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional
from urllib.parse import urlparse

from benchmark.settings import Settings

MODES = ("online", "offline", "disabled")
TAG_LENGTH = 64  # W&B refuses longer tags


class WandbSettings(Settings):
    """Weights & Biases logging (``tracking.wandb`` in an experiment)."""

    enabled: bool = True
    """log to W&B at all"""
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto = online with credentials, else offline (upload later with `wandb sync`)"""
    project: str = "dogbench"
    """W&B project"""
    entity: Optional[str] = None
    """W&B user or team (default: the account's default)"""

    def resolved_mode(self) -> str:
        return resolve_mode(self.mode, self.enabled)


@dataclass(frozen=True)
class WandbRun:
    """Where and under what a W&B run is filed; None/empty leaves the choice to the code that starts the run."""

    directory: Optional[Path] = None
    """wandb.init(dir=...): the run's files go to <directory>/wandb/"""
    group: Optional[str] = None
    """W&B group (the harness: the experiment's name)"""
    job_type: Optional[str] = None
    """W&B job type (fine-tune, evaluate, report)"""
    name: Optional[str] = None
    """display name"""
    tags: tuple[str, ...] = ()
    """extra tags, e.g. from ``tag("dataset", name)``"""
    config: Mapping[str, Any] = field(default_factory=dict)
    """merged into the run's config (e.g. the experiment's name and the stage's identity hash)"""


def tag(key: str, value: Any) -> str:
    """A ``key:value`` tag (e.g. ``method:dog``, ``w:1.5``); numbers in their shortest form, cut to W&B's limit."""
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{key}:{value}"[:TAG_LENGTH]


def has_wandb_credentials() -> bool:
    """True when wandb could log in without asking: $WANDB_API_KEY, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str = "auto", enabled: bool = True) -> str:
    """The W&B mode to use: online, offline or disabled (see the module docstring for ``auto``)."""
    if not enabled or mode == "disabled":
        return "disabled"
    if mode == "auto":
        env = os.environ.get("WANDB_MODE", "").lower()
        if env in MODES:
            return env
        return "online" if has_wandb_credentials() else "offline"
    if mode == "online" and not has_wandb_credentials():
        warn("mode online was asked for but no credentials were found (WANDB_API_KEY or `wandb login`); logging offline")
        return "offline"
    if mode not in MODES:
        raise ValueError(f"unknown W&B mode {mode!r}; choose auto, online, offline or disabled")
    return mode


def warn(message: str) -> None:
    print(f"warning: W&B: {message}", file=sys.stderr)
