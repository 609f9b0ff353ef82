"""The fair-generation benchmark (``python -m benchmarks.fair_generation --quick``) runs end to end at
tiny sizes: it trains (then reloads) its models, chooses pc_frac on validation samples, judges every
cell and writes its section between markers, keeping the rest of the file."""
import math

from benchmarks import fair_generation
from benchmarks.report import markers


def test_quick_run_writes_its_section_and_reuses_its_models(tmp_path, capsys):
    out, work = tmp_path / "results.md", tmp_path / "work"
    out.write_text("# Results\n\nwritten by hand\n")
    args = ["--quick", "--samples", "8", "--validation-samples", "4", "--work", str(work), "--out", str(out),
            "--threads", "1"]
    assert fair_generation.main(args) == 0
    text = out.read_text()
    begin, end = markers("fair-generation")
    assert text.count(begin) == 1 and text.count(end) == 1 and "written by hand" in text
    assert "**pc_frac** chosen on validation samples" in text
    assert "characters long on average: a short word is more often valid" in text
    for column in ("novel", "distinct novel", "valid among well-formed", "mean length (well-formed)", "TV"):
        assert f"| {column} |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split(" | ")[2:3] == ["factorized"]]
    assert len(rows) == 2 * len(fair_generation.step_grid(13))      # both rules, every step count
    assert "one token per step, random" in text
    assert "valid among well-formed words of each length" in text and "| training words | share, by frequency |" in text
    capsys.readouterr()
    assert fair_generation.main(args) == 0                               # the second run trains nothing
    printed = capsys.readouterr().out
    assert "loaded the models" in printed and "training the backbone" not in printed
    # another layer: models and a section of its own beside the demo's
    assert fair_generation.main(args + ["--dependence-only"]) == 0
    text = out.read_text()
    assert text.count(begin) == 1 and text.count(markers("fair-generation-dependence")[0]) == 1
    assert "(dependence only: the circuit's conditionals divided out)" in text


def test_two_seeds_report_mean_and_sd_and_the_gated_decoder_per_seed(tmp_path):
    out = tmp_path / "results.md"
    args = ["--quick", "--samples", "6", "--validation-samples", "3", "--work", str(tmp_path / "work"),
            "--out", str(out), "--threads", "1", "--seeds", "0,1"]
    assert fair_generation.main(args) == 0
    text = out.read_text()
    assert "seeds 0, 1 on one data split (data seed 0)" in text
    assert "mean over seeds ± their standard deviation" in text
    rows = [line for line in text.splitlines() if line.startswith("| 2 | random | CoDD, gated |")]
    assert len(rows) == 1 and rows[0].count(" ± ") >= 6                  # every rate and count with its sd
    models = [p.name for p in (tmp_path / "work").iterdir() if "-backbone-" not in p.name]    # not the shared backbones
    assert sorted(name.split("-s")[-1] for name in models) == ["0", "1"]


def test_bad_options_end_with_one_line_and_status_2(capsys):
    for bad in (["--samples", "0"], ["--seeds", "0,0"], ["--seeds", "-1"], ["--seeds", "a"]):
        assert fair_generation.main(bad) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 4          # one line each


def test_ratio_of():
    assert fair_generation.ratio_of(1.0, 0.5) == 2.0 and fair_generation.ratio_of(1.0, 0.0) == float("inf")
    nan = float("nan")
    assert all(math.isnan(fair_generation.ratio_of(a, b)) for a, b in ((0.0, 0.0), (nan, 0.5), (1.0, nan)))


def test_length_table_pools_the_seeds_counts():
    """Counts are means over seeds: the rate is their ratio (pooled), the count their total; an empty bin reads
    as such, not as a rate."""
    bins = len(fair_generation.WORD_LENGTH_BINS)
    counts = {f"{name}_length_{b}": 0.0 for name in ("well_formed", "valid") for b in range(bins)}
    row = {"remasking": "random", "decoder": "CoDD", "seeds": 2, **counts}
    row["well_formed_length_0"], row["valid_length_0"] = 2.5, 2.0          # seeds: 2 of 3 and 2 of 2
    lines = fair_generation.length_table([row], [0.5, 0.5] + [0.0] * (bins - 2))
    assert lines[0].startswith("| remasking | decoder | 1–2 characters | 3–4 characters |")
    assert lines[2].startswith("| training words | share, by frequency | 0.500 | 0.500 | 0.000 |")
    assert lines[3] == "| random | CoDD | 0.800 (5) | " + " | ".join(["– (0)"] * (bins - 1)) + " |"
