"""``python -m benchmarks.layer_steps``: one layer measured at increasing step counts, one row each."""
import pytest

from benchmarks import layer_steps


def test_quick_run_writes_one_row_per_step_count(tmp_path):
    out = tmp_path / "results.md"
    assert layer_steps.main(["--quick", "--steps", "1,3", "--items", "5", "--out", str(out)]) == 0
    text = out.read_text()
    assert "<!-- pcdiff-bench:layer-steps:begin -->" in text and "smoke test" in text
    assert "\n| 1 |" in text and "\n| 3 |" in text


def test_step_counts_must_increase():
    with pytest.raises(SystemExit):
        layer_steps.main(["--quick", "--steps", "3,1"])


def test_another_layer_or_a_validation_draw_gets_a_section_of_its_own(tmp_path):
    out = tmp_path / "results.md"
    assert layer_steps.main(["--quick", "--steps", "2", "--items", "5", "--layer-draw", "time", "--cache-maskings",
                             "2", "--control-seed", "100", "--out", str(out)]) == 0
    text = out.read_text()
    assert "<!-- pcdiff-bench:layer-steps-static-time-h128-m2-c100:begin -->" in text
    assert "the controls' validation draw, seed 100" in text and "the same, count draw" in text


def test_the_dependence_only_layer_gets_its_own_section_and_no_gain_at_one_token(tmp_path):
    out = tmp_path / "results.md"
    assert layer_steps.main(["--quick", "--steps", "2", "--items", "5", "--dependence-only", "--out", str(out)]) == 0
    text = out.read_text()
    assert "-h128-m16-dep:begin -->" in text and "dependence only" in text
    row = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    gain = float(row.split(" | ")[3].split(" ± ")[0])
    assert abs(gain) < 5e-4                         # one masked token is the backbone's, up to float32 rounding


def test_the_generation_guard_reads_one_token_per_step_off_validation_samples(tmp_path):
    out = tmp_path / "results.md"
    assert layer_steps.main(["--quick", "--steps", "2", "--items", "4", "--generation-samples", "6",
                             "--control-seed", "100", "--out", str(out)]) == 0
    text = out.read_text()
    assert "The generation guard at 2 steps (6 words per cell" in text
    for rule in ("low_confidence", "random"):
        assert f"- {rule}: valid CoDD " in text and "standard errors of the difference" in text
        assert f"| {rule} | CoDD | " in text and f"| {rule} | factorized | " in text     # by length, beside it


def test_the_guard_fails_a_layer_only_well_beyond_chance():
    rate = lambda valid, n=1000: {"valid": valid, "valid_se": (valid * (1 - valid) / n) ** 0.5}  # noqa: E731
    near = layer_steps.guard_line(rate(0.995), rate(0.999), "low_confidence")
    assert "below by 0.004, 1.6 standard errors" in near and near.endswith("passes)")
    assert layer_steps.guard_line(rate(0.829), rate(0.999), "low_confidence").endswith("fails)")
    above = layer_steps.guard_line(rate(0.7), rate(0.6), "random")
    assert "CoDD above by 0.100, 4.7 standard errors" in above and above.endswith("passes)")
    assert layer_steps.guard_line(rate(0.9), rate(1.0), "random").endswith("fails)")         # no error, a real drop
    assert layer_steps.guard_line(rate(1.0), rate(1.0), "random").endswith("passes)")


def test_the_generation_guard_is_refused_where_it_has_no_judge():
    with pytest.raises(SystemExit):
        layer_steps.main(["--quick", "--dataset", "python", "--generation-samples", "6"])
