"""Which real images each metric of the card compares a sample set with, resolved before any network runs (a missing
split fails in a second, not after the reference statistics).

- the reference (fd, prdc, kid, cmmd): the dataset's ``ref_split``, as before;
- train and held out (copy): the split the model was fine-tuned on (``train_split``: ``train``, or ``all``) and the
  one it never saw (``test`` for a ``train`` fine-tune; none for ``all``), or image sets given explicitly
  (``dogbench evaluate --train DIR --held-out DIR``);
- the labelled reals of the class KID: the reference split with its labels; for ``all``, the train and test splits
  joined (the same images, and the same cached features as the copy rate's, so nothing is extracted twice).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from benchmark.data import DatasetSpec, get_dataset
from benchmark.errors import UserError
from benchmark.metrics.features import ImageSet
from benchmark.metrics.memorization import SPLITS_TEXT, held_out_split
from benchmark.metrics.registry import METRICS


@dataclass
class RealSets:
    train: object = None              # the fine-tuning images (an ImageDataset or ImageSet)
    held_out: object = None           # real images of the target the model was not fine-tuned on
    classes: list = field(default_factory=list)  # labelled real sets, joined for the class KID
    class_names: list | None = None


def _split_or_none(dataset, split: str, data_root):
    """Split ``split`` of a registered dataset, or None when this copy of it has none (a plain class folder has no
    test split; a 32x32 set may list no test images)."""
    try:
        found = get_dataset(dataset, split=split, root=data_root)
    except UserError:
        if split == "train":
            raise
        return None
    return found if len(found) else None


def _as_set(value, what: str):
    return ImageSet(value, what=what) if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__") else value


def real_sets(metrics, dataset, ref, *, data_root=None, ref_split: str = "all", train_split: str = "train",
              train=None, held_out=None) -> RealSets:
    """The real sets ``metrics`` need (see the module docstring). ``dataset``: what evaluate_samples got (a
    registry name, a DatasetSpec, or a dataset object); ``ref``: its resolved reference split."""
    kinds = {METRICS[m].kind for m in metrics}
    named = isinstance(dataset, (str, DatasetSpec))
    found = RealSets()
    if "copy" in kinds:
        found.train = _as_set(train, "--train") if train is not None else \
            (get_dataset(dataset, split=train_split, root=data_root) if named else None)
        if held_out is not None:
            found.held_out = _as_set(held_out, "--held-out")
        elif named and held_out_split(train_split):
            found.held_out = _split_or_none(dataset, held_out_split(train_split), data_root)
        elif train is not None and not named:
            found.held_out = ref  # an explicit fine-tuning set against a reference folder: the reference is unseen
        copy = next(m for m in metrics if METRICS[m].kind == "copy")
        if found.train is None:
            raise UserError(f"{copy} needs the images the model was fine-tuned on: pass --train DIR|NPZ (or a "
                            f"registered --dataset, whose {train_split} split they are)")
        if found.held_out is None:
            raise UserError(f"{copy} needs real images of the target the model was not fine-tuned on, and "
                            f"{getattr(dataset, 'name', dataset)} has none outside the {train_split} split: fine-tune "
                            f"on the train split (finetune.split: train) or pass --held-out DIR|NPZ ({SPLITS_TEXT})")
    if "class_kid" in kinds:
        metric = next(m for m in metrics if METRICS[m].kind == "class_kid")
        if named and ref_split == "all":
            found.classes = [s for s in (_split_or_none(dataset, "train", data_root),
                                         _split_or_none(dataset, "test", data_root)) if s is not None]
        else:
            found.classes = [ref]
        labelled = [s for s in found.classes if getattr(s, "labels", None) is not None]
        if len(labelled) != len(found.classes) or getattr(found.classes[0], "num_classes", 1) < 2:
            raise UserError(f"{metric} needs real images with class labels: pass a registered or own --dataset "
                            f"(a folder of images has no classes)")
        found.class_names = list(getattr(found.classes[0], "class_names", []) or []) or None
    return found
