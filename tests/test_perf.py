"""`dogbench perf` plumbing on a tiny model (a smoke test of the command and its record, not a timing)."""
import json

from benchmark.cli import main


def test_perf_command_writes_one_row_per_measurement(tmp_path, one_thread):
    out = tmp_path / "perf.json"
    assert main(["perf", "--device", "cpu", "--model", "DiT-N/8", "--image-size", "16", "--in-channels", "3",
                 "--num-classes", "5", "--batch-size", "2", "--train-batch-size", "2", "--train-steps", "1",
                 "--timed-steps", "2,3", "--repeat", "1", "--feature-images", "2", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["device"].startswith("CPU") and record["settings"]["model"] == "DiT-N/8"
    rows = record["rows"]
    sampling = {(r["method"], r["path"]) for r in rows if r["work"] == "sampling"}
    assert sampling == {(m, p) for m in ("none", "cfg", "dog") for p in ("reference", "fast")}
    assert all(r["img_per_s"] > 0 for r in rows if "img_per_s" in r)
    assert {r["path"] for r in rows if r["work"] == "finetune_step"} == {"reference", "fast"}
    assert {r["network"] for r in rows if r["work"] == "features"} == {"inception_v3_fid", "efficientnet_lite0"}
    assert any(r["work"] == "png" for r in rows)
    assert {r["path"] for r in rows if r["work"] == "ratio"} == {"reference", "fast"}
    assert record["paper_protocol_device_hours"] > 0  # the estimate from the measured rates


def test_perf_times_both_one_copy_dog_paths_of_a_lora_finetune(tmp_path, one_thread):
    out = tmp_path / "perf.json"
    assert main(["perf", "--device", "cpu", "--model", "DiT-N/8", "--image-size", "16", "--in-channels", "3",
                 "--num-classes", "5", "--batch-size", "2", "--train-batch-size", "2", "--train-steps", "1",
                 "--timed-steps", "2,3", "--repeat", "1", "--paths", "reference", "--skip", "sampling,png,features",
                 "--lora-rank", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    variants = {(r["method"], r["variant"]) for r in rows if r["work"] == "sampling"}
    assert variants == {("dog", "full: two models"), ("dog", "lora-r2: one copy, two forwards (ships)"),
                        ("dog", "lora-r2: one copy, mixed batch"), ("cfg", "full"), ("cfg", "lora-r2")}
    assert {r["what"] for r in rows if r["work"] == "ratio"} == \
        {f"dog/cfg, {v}" for m, v in variants if m == "dog"}
    assert [r.get("variant") for r in rows if r["work"] == "finetune_step"] == [None, "lora-r2"]
