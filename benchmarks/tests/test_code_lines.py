"""The code-lines benchmark (``python -m benchmarks.code_lines --quick``) runs end to end at tiny sizes:
blocks of 32, every decoder (factorized, CoDD's joint and any-order draws) at every step count and the
random-order control, the layer's held-out objective and the held-out lines' own rates, its section
written; layers of another adapter couple to the same saved backbone."""
import torch
from safetensors.torch import load_file

from benchmarks import code_lines
from benchmarks.report import markers


def test_quick_run_writes_its_section(tmp_path):
    out = tmp_path / "results.md"
    args = ["--quick", "--samples", "6", "--work", str(tmp_path / "work"), "--out", str(out), "--threads", "1"]
    assert code_lines.main(args) == 0
    text = out.read_text()
    begin, end = markers("code-lines")
    assert text.count(begin) == 1 and text.count(end) == 1
    assert "block_length=32" in text and "The held-out lines themselves: tokenizable" in text
    assert "The layer's held-out objective" in text and "factorized backbone" in text
    for steps, remasking in code_lines.CELLS:
        label = f"{steps} (random order)" if remasking == "random" else str(steps)
        for decoder, _ in code_lines.DECODERS:
            assert text.count(f"\n| {label} | {decoder} | ") == 1
    assert "- 4 steps per block: tokenizable CoDD" in text and "- control, one token per step" in text
    assert "- factorization loss, both in a random order" in text
    assert "- the same with CoDD's any-order draw (the paper's CoDD+AO" in text
    assert "- the same lines, among the well-formed ones alone" in text and "| tokenizable among well-formed |" in text
    # another adapter: its own models and a section of its own beside the static layer's
    assert code_lines.main(args + ["--adapter", "backbone_weight"]) == 0
    text = out.read_text()
    assert text.count(begin) == 1 and text.count(markers("code-lines-backbone_weight")[0]) == 1
    assert "backbone_weight adapter" in text
    folders = sorted(p.name for p in (tmp_path / "work").iterdir())
    assert len(folders) == 3 and sum("-backbone-" in name for name in folders) == 1
    # both layers were trained on one backbone, the shared one
    weights = [load_file(p) for p in sorted((tmp_path / "work").glob("*/backbone.safetensors"))]
    assert len(weights) == 3
    assert all(w.keys() == weights[0].keys() and all(torch.equal(w[k], weights[0][k]) for k in w) for w in weights)


def test_bad_options_end_with_one_line_and_status_2(capsys):
    assert code_lines.main(["--threads", "0"]) == 2 and code_lines.main(["--samples", "0"]) == 2
    assert code_lines.main(["--backbone-steps", "0"]) == 2 and code_lines.main(["--backbone-size", "128"]) == 2
    assert code_lines.main(["--num-states", "0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 5              # one line each


def test_another_backbone_or_adapter_gets_a_section_of_its_own():
    from dataclasses import replace
    default = code_lines.FULL
    assert default.section("code-lines", "T", default) == ("code-lines", "T")
    wider = replace(default, dim=128, depth=4, backbone=8000, adapter="backbone_weight", shipped=None)
    assert wider.section("code-lines", "T", default) == ("code-lines-backbone_weight-b8000-d128x4",
                                                         "T: backbone_weight adapter, backbone 128×4, 8,000 steps")
    assert wider.section("code-lines", "T") == ("code-lines-backbone_weight", "T: backbone_weight adapter")
    coupling_only = replace(default, dependence_only=True)
    assert coupling_only.section("code-lines", "T", default) == ("code-lines-dependence", "T: dependence only")
    assert coupling_only.tag != default.tag                           # its models are kept apart
    assert code_lines.size_choice(default).startswith("its size is 512 states × 3,000 steps")
    assert code_lines.size_choice(replace(default, layer=6000)).startswith("its size was set by the command")
    smaller = replace(default, num_states=128, layer=4000)
    assert smaller.section("code-lines", "T", default) == ("code-lines-h128-l4000",
                                                           "T: layer of 128 states, 4,000 steps")


def test_over_seeds_means_and_sds_and_refuses_mismatched_rows():
    import math
    import pytest
    from benchmarks.judged_models import over_seeds, standard_error
    one = [{"steps": 2, "decoder": "CoDD", "valid": 0.2, "valid_se": 0.01, "distinct_valid": 3, "tag": "x"}]
    two = [{"steps": 2, "decoder": "CoDD", "valid": 0.4, "valid_se": 0.01, "distinct_valid": 5, "tag": "x"}]
    assert over_seeds([one], ("steps", "decoder")) is one                     # one seed: as it is
    (row,) = over_seeds([one, two], ("steps", "decoder"))
    assert math.isclose(row["valid"], 0.3) and math.isclose(row["valid_sd"], math.sqrt(0.02))
    assert row["distinct_valid"] == 4.0 and "valid_se" not in row and "tag" not in row and row["seeds"] == 2
    assert math.isclose(standard_error(row, "valid"), math.sqrt(0.02) / math.sqrt(2))
    assert standard_error(one[0], "valid") == 0.01
    with pytest.raises(ValueError, match="differ"):
        over_seeds([one, [{**two[0], "steps": 3}]], ("steps", "decoder"))


def test_the_shipped_backbone_couples_every_seed_and_a_trained_one_gets_a_section_of_its_own(
        tmp_path, quick_on_the_shipped_code_backbone):
    from pcdiff.train.checkpoint import checkpoint_record
    record = quick_on_the_shipped_code_backbone
    out, work = tmp_path / "results.md", tmp_path / "work"
    args = ["--quick", "--samples", "4", "--work", str(work), "--out", str(out), "--threads", "1", "--seeds", "0,1"]
    assert code_lines.main(args) == 0
    text = out.read_text()
    assert text.count(markers("code-lines")[0]) == 1
    assert f"shipped backbone (pcdiff/pretrained/{code_lines.SHIPPED_NAME}" in text
    folders = sorted(work.iterdir())
    assert len(folders) == 2 and not any("-backbone-" in f.name for f in folders)      # nothing trained but layers
    assert {checkpoint_record(f / "backbone")["sha256"] for f in folders} == {record["sha256"]}
    assert code_lines.main(args + ["--backbone-steps", "5"]) == 0                     # one trained per seed instead
    text = out.read_text()
    assert text.count(markers("code-lines")[0]) == 1 and text.count(markers("code-lines-b5-d32x1")[0]) == 1
    assert sum("-backbone-b5-" in f.name for f in work.iterdir()) == 2


def test_a_shipped_backbone_of_another_size_is_refused_not_trained(tmp_path, shipped_code_backbone):
    import pytest
    from dataclasses import replace
    from benchmarks.judged_models import frozen_backbone, prepared
    sizes = replace(code_lines.QUICK, shipped=code_lines.SHIPPED_NAME, dim=16)     # the shipped one is 32×1
    run = prepared("python", sizes, 0, code_lines.MAX_LENGTH)
    with pytest.raises(ValueError, match="python-mask is not python's at 16x1"):
        frozen_backbone(run, tmp_path, sizes, 0, code_lines.MAX_LENGTH)
