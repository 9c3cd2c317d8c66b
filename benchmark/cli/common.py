"""What several commands do the same way: progress and quiet output, checking an output location before any work,
whole-number lists."""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

from benchmark.errors import UserError

# third-party loggers that print tips, notices and download bars during model loading
CHATTY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "diffusers",
                  "huggingface_hub", "transformers", "torch.hub")


def progress_wanted(args) -> bool:
    """Progress bars unless --no-progress, and only on a terminal (a log file gets no bar redraws)."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def quiet_third_party() -> None:
    """Silence third-party progress bars, tips and warnings (Lightning tips, Hugging Face notices, torch warnings)
    for the rest of the process; this project's own warnings still show."""
    for name, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("HF_HUB_VERBOSITY", "error"),
                        ("DIFFUSERS_VERBOSITY", "error"), ("TRANSFORMERS_VERBOSITY", "error"),
                        ("TQDM_DISABLE", "1")):
        os.environ[name] = value
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(?!benchmark(\.|$))")


def _probe_writable(folder: Path, flag: str, shown: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:
        raise UserError(f"{flag} {shown}: {folder} is a file, not a folder; pass another path") from None
    except OSError as e:
        raise UserError(f"{flag} {shown} is not writable ({e.strerror or e}); pass a folder you can write to") from None


def output_folder(path, flag: str = "--out") -> Path:
    """``path`` as a folder that exists (created) and can be written, or a one-line UserError, before any work."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder; pass a folder (it is created when missing)")
    _probe_writable(folder, flag, folder)
    return folder


def results_folder(exp, explicit=None) -> Path:
    """The experiment's results folder (``<root>/<name>``), created and writable before any work, or one UserError
    line naming where the root came from: ``--results-root``, ``$DOGBENCH_RESULTS`` or the default ./results."""
    from benchmark.io import RESULTS_ROOT_ENV  # noqa: PLC0415 - keeps this module's imports light

    folder = exp.results_dir(explicit)
    if explicit:
        flag, shown = "--results-root", Path(explicit).expanduser()
    elif os.environ.get(RESULTS_ROOT_ENV):
        flag, shown = f"${RESULTS_ROOT_ENV}", Path(os.environ[RESULTS_ROOT_ENV]).expanduser()
    else:
        flag, shown = "the results folder (default ./results; --results-root moves it)", folder.parent
    for part in [folder, *folder.parents]:  # the first part of the path that exists must be a folder
        if part.exists():
            if not part.is_dir():
                raise UserError(f"{flag} {shown}: {part} is a file, not a folder; pass another results root")
            break
    _probe_writable(folder, flag, shown)
    return folder


def output_file(path, flag: str = "--out") -> Path:
    """``path`` as a file that can be written (its folder created), or a one-line UserError, before any work."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise UserError(f"{flag} {file} is a folder; pass a file path, e.g. {file / 'metrics.json'}")
    _probe_writable(file.parent, flag, file)
    return file


def index_list(text: str, flag: str) -> list[int]:
    """``"0,3,7"`` -> ``[0, 3, 7]``: whole numbers >= 0, each once; anything else is a one-line UserError."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t.isdigit() for t in items):
        raise UserError(f"{flag} {text!r} must be comma-separated class indices (whole numbers >= 0), e.g. {flag} 0,3,7")
    values = [int(t) for t in items]
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise UserError(f"{flag} gives {repeated[0]} twice; give each class once")
    return values
