"""PROTOCOL.md lists every choice that can move the numbers, and follows the experiment when any of them changes."""
import pytest

from benchmark.harness.loading import load_experiment
from benchmark.harness.protocol import REFERENCE_VALUES, protocol_table, to_markdown

FIELDS = ["fine-tune data", "fine-tune steps", "fine-tune batch", "learning rate", "EMA decay", "label dropout",
          "fine-tune precision", "sampling precision", "decoding precision", "sampler", "guided channels",
          "guidance interval", "samples per setting", "labels", "reference set", "reference size", "preprocessing",
          "w selection"]


def row(exp, setting):
    return next(r for r in protocol_table(exp) if r["setting"] == setting)


def test_every_field_is_listed_with_three_columns():
    exp = load_experiment("paper")
    table = protocol_table(exp)
    assert [r["setting"] for r in table][:len(FIELDS)] == FIELDS
    assert all(r["this run"] and r["paper"] and r["DogFit code"] for r in table)
    text = to_markdown(exp)
    assert text.count("\n|") == len(REFERENCE_VALUES) + 2  # header, separator, one line per field


@pytest.mark.parametrize("override, setting", [
    ("finetune.split=all", "fine-tune data"),
    ("finetune.steps=100", "fine-tune steps"),
    ("finetune.global_batch_size=64", "fine-tune batch"),
    ("finetune.lr=2e-4", "learning rate"),
    ("finetune.ema_decay=0.999", "EMA decay"),
    ("finetune.label_dropout=0.2", "label dropout"),
    ("finetune.precision=bf16", "fine-tune precision"),
    ("sampling.precision=bf16", "sampling precision"),
    ("sampling.decode_precision=fp32", "decoding precision"),
    ("sampling.steps=25", "sampler"),
    ("sampling.clip_denoised=true", "sampler"),
    ("sampling.guided_channels=null", "guided channels"),
    ("sampling.guidance_interval=[0, 700]", "guidance interval"),
    ("sampling.num_samples=5000", "samples per setting"),
    ("report.seeds=[1, 2]", "samples per setting"),
    ("evaluation.ref_split=test", "reference set"),
    ("evaluation.reference=subsample", "reference size"),
    ("evaluation.metrics=[fid]", "preprocessing"),
    ("evaluation.select_by=fd_dinov2", "w selection"),
    ("selection.seeds=[7]", "w selection"),
    ("report.fixed_w=[2.0]", "w selection"),
    ("report.bootstrap=50", "intervals"),
    ("finetune.adapter={rank: 8}", "fine-tuned weights"),
])
def test_each_field_follows_its_setting(override, setting):
    base, changed = load_experiment("paper"), load_experiment("paper", [override])
    assert row(base, setting)["this run"] != row(changed, setting)["this run"], override
    others = [r["setting"] for r in protocol_table(base) if r["setting"] != setting
              and r["this run"] != row(changed, r["setting"])["this run"]]
    assert not [o for o in others if o not in ("samples per setting", "w selection", "fine-tune data",
                                               "preprocessing", "reference size")], (override, others)


def test_feature_networks_and_the_source_are_listed_with_their_hashes():
    import pandas as pd

    exp = load_experiment("default")
    assert "runs.csv" in row(exp, "feature networks")["this run"]  # before anything is evaluated
    runs = pd.DataFrame([{"feature_networks": "fd_effnet=efficientnet_lite0:ab87ca8f38e9; prdc_effnet=efficientnet_"
                                              "lite0:ab87ca8f38e9", "pretrained_sha256": "060460ccae935a75" + "0" * 48},
                         {"feature_networks": "fd_effnet=efficientnet_lite0:ab87ca8f38e9; prdc_effnet=efficientnet_"
                                              "lite0:ab87ca8f38e9", "pretrained_sha256": ""}])
    table = {r["setting"]: r["this run"] for r in protocol_table(exp, runs)}
    assert table["feature networks"] == ("fd_effnet=efficientnet_lite0:ab87ca8f38e9; "
                                         "prdc_effnet=efficientnet_lite0:ab87ca8f38e9")
    assert "source_cifar10_dit.pt" in table["source checkpoint"] and "sha256 060460ccae93" in table["source checkpoint"]
    assert "ab87ca8f38e9" in to_markdown(exp, runs)


def test_the_card_is_listed_once_with_its_splits():
    exp = load_experiment("default", ["evaluation.metrics=[fd_effnet,prdc_effnet,kid_effnet,class_kid_effnet,"
                                      "vendi_effnet,copy_effnet]"])
    text = to_markdown(exp)
    card = text[text.index("## The metric card"):]
    for metric in ("kid_effnet", "class_kid_effnet", "vendi_effnet", "copy_effnet"):
        assert card.count(f"- {metric}: ") == 1, metric
    assert "fd_effnet:" not in card  # the table's own metrics are not repeated
    assert "this run: train = the train split, held out = the test split" in card
    assert "## The metric card" not in to_markdown(load_experiment("default", ["evaluation.metrics=[fd_effnet]"]))
