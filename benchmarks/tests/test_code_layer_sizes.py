"""``python -m benchmarks.code_layer_sizes``: one row per state count and step count, on the code-lines
backbone kept in the work folder; the layer's size is chosen without generating a line."""
import pytest

from benchmarks import code_layer_sizes


def test_quick_run_writes_one_row_per_size_and_step_count(tmp_path):
    out, work = tmp_path / "results.md", tmp_path / "work"
    assert code_layer_sizes.main(["--quick", "--states", "4,8", "--steps", "1,3", "--work", str(work),
                                  "--out", str(out)]) == 0
    text = out.read_text()
    assert "<!-- pcdiff-bench:code-layer-sizes:begin -->" in text
    for states in (4, 8):
        for steps in (1, 3):
            assert f"\n| {states} | {steps} |" in text
    assert [p.name for p in work.iterdir()] == ["python-backbone-b10-d32x1-d0-s0"]      # the backbone alone, kept



def test_on_the_shipped_backbone_nothing_is_trained_but_layers(tmp_path, quick_on_the_shipped_code_backbone):
    out, work = tmp_path / "results.md", tmp_path / "work"
    args = ["--quick", "--states", "4", "--steps", "1", "--work", str(work), "--out", str(out)]
    assert code_layer_sizes.main(args) == 0
    text = out.read_text()
    assert "<!-- pcdiff-bench:code-layer-sizes:begin -->" in text and "\n| 4 | 1 |" in text
    assert "shipped backbone (pcdiff/pretrained/python-mask" in text and not work.exists()
    assert code_layer_sizes.main(args + ["--backbone-steps", "10"]) == 0             # a trained one: its own section
    assert "<!-- pcdiff-bench:code-layer-sizes-b10-d32x1:begin -->" in out.read_text()


@pytest.mark.parametrize("option", [["--steps", "3,1"], ["--states", "0"], ["--states", "a"], ["--threads", "0"],
                                    ["--backbone-steps", "0"]])
def test_bad_options_stop_with_a_usage_error(option):
    with pytest.raises(SystemExit):
        code_layer_sizes.main(["--quick", *option])
