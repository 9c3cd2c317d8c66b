"""``dogbench sample`` and ``dogbench evaluate`` describe every flag the same way: a unit or meaning, the default
said once, one precision vocabulary; --no-progress also silences third-party tips and warnings."""
import logging
import warnings

import pytest

from benchmark.cli import build_parser
from benchmark.cli.common import quiet_third_party
from benchmark.settings import PRECISIONS


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_every_flag_says_its_default_once(command):
    parser = build_parser([command]).commands[command]
    for action in parser._actions:
        if action.dest == "help" or action.required:
            continue
        text = action.help or ""
        assert text.count("default:") == 1, (action.option_strings, text)
        assert action.metavar is None or action.metavar.upper() == action.metavar or "|" in action.metavar \
            or action.metavar.startswith("{"), action.option_strings  # N, X, PATH, DIR, NAME|DIR, {a,b}
    assert any("--no-progress" in a.option_strings for a in parser._actions)


def test_the_help_of_both_commands():
    sample = build_parser(["sample"]).commands["sample"].format_help()
    evaluate = build_parser(["evaluate"]).commands["evaluate"].format_help()
    assert "from the checkpoint: on for pixel-space models" in " ".join(sample.split())
    assert "{" + ",".join(PRECISIONS) + "}" in sample and "fp32 (TF32 off)" in " ".join(evaluate.split())
    assert "--classes A,B,..." in sample and "--reference PATH" in evaluate and "--allow-partial" in evaluate


def test_quiet_silences_third_party_warnings_and_loggers_but_not_ours(monkeypatch):
    levels = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "diffusers")}
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "DIFFUSERS_VERBOSITY", "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_third_party()
            warnings.warn_explicit("a tip", UserWarning, "x.py", 1, module="lightning.pytorch.trainer")
            warnings.warn_explicit("ours", UserWarning, "y.py", 1, module="benchmark.metrics.inception")
        assert [str(w.message) for w in caught] == ["ours"]
        assert logging.getLogger("lightning.pytorch").getEffectiveLevel() == logging.ERROR
        assert logging.getLogger("diffusers.models.modeling_utils").getEffectiveLevel() == logging.ERROR
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_every_command_prints_its_help():
    """Help strings come from docstrings; argparse %-formats them, so one stray '%' broke `toy --help`."""
    commands = build_parser(["run"]).commands  # every command's parser, built on demand below
    for command in commands:
        text = build_parser([command]).commands[command].format_help()
        assert "usage:" in text and "--help" in text, command
