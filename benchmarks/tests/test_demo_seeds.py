"""The three-seed demo benchmark (``python -m benchmarks.demo_seeds``): every seed's controls end up in
one mean ± sd table with its targets read off, written between its markers."""
from benchmarks import demo_seeds


def test_quick_run_writes_one_table_per_item_set_and_the_targets(tmp_path, capsys):
    out = tmp_path / "results.md"
    out.write_text("# Results\n\nwritten by hand\n")
    assert demo_seeds.main(["--quick", "--seeds", "0,1", "--items", "6", "--out", str(out)]) == 0
    text = out.read_text()
    assert "written by hand" in text and "<!-- pcdiff-bench:demo-seeds:begin -->" in text
    for heading in ("**in distribution**", "**unseen types**", "Targets (issue 13)"):
        assert heading in text
    assert "| 1 token |" in text and "| 0.9 |" in text
    assert "gain at one masked token" in text
    assert "training distribution (exact)" in text and "excess over the training distribution" in text
    unseen = text.split("**unseen types**")[1].split("Targets")[0]
    assert all(line.split(" | ")[6] == "–" for line in unseen.splitlines() if line.startswith("| 0."))


def test_another_layer_gets_a_section_of_its_own(tmp_path):
    out = tmp_path / "results.md"
    assert demo_seeds.main(["--quick", "--seeds", "0", "--items", "4", "--adapter",
                            "latent_evidence", "--out", str(out)]) == 0
    text = out.read_text()
    # named by all of its settings, so that a later change of the demo's defaults never renames it
    assert "<!-- pcdiff-bench:demo-seeds-latent_evidence-128-count-m16-l4000:begin -->" in text
    assert "<!-- pcdiff-bench:demo-seeds:begin -->" not in text and "latent_evidence adapter" in text
    assert demo_seeds.main(["--quick", "--seeds", "0", "--items", "4", "--layer-draw", "time",
                            "--cache-maskings", "2", "--out", str(out)]) == 0
    text = out.read_text()
    assert "<!-- pcdiff-bench:demo-seeds-static-128-time-m2-l4000:begin -->" in text
    assert "maskings drawn by time, 2 cached per item, 4,000 layer steps" in text
    # the layer's steps are one of its settings: the demo's layer trained longer is another section
    assert demo_seeds.main(["--quick", "--seeds", "0", "--items", "4", "--layer-steps", "3", "--out", str(out)]) == 0
    text = out.read_text()
    assert "<!-- pcdiff-bench:demo-seeds-static-128-count-m16-l3:begin -->" in text


def test_python_lines_get_a_section_of_their_own(tmp_path):
    out = tmp_path / "results.md"
    assert demo_seeds.main(["--quick", "--dataset", "python", "--seeds", "0", "--items", "4",
                            "--out", str(out)]) == 0
    text = out.read_text()
    assert "<!-- pcdiff-bench:demo-seeds-python:begin -->" in text and "## Python lines: the demo over" in text


def test_a_backbone_checkpoint_gets_a_section_of_its_own(tmp_path):
    from pcdiff.app.pretrained import train_shipped_backbone
    stem = tmp_path / "words-tiny"
    train_shipped_backbone(stem, progress=False, steps=2, dim=16, depth=1, eval_every=1, eval_items=4)
    out = tmp_path / "results.md"
    assert demo_seeds.main(["--quick", "--seeds", "0", "--items", "4", "--backbone-checkpoint",
                            str(stem), "--out", str(out)]) == 0
    text = out.read_text()
    assert "<!-- pcdiff-bench:demo-seeds-words-tiny:begin -->" in text
    assert "the backbone checkpoint `words-tiny` (16×1, 2 steps" in text


def test_mean_sd_leaves_a_figure_with_a_missing_seed_out():
    assert demo_seeds.mean_sd([1.0, 3.0]) == "2.000 ± 1.414"
    assert demo_seeds.mean_sd([1.0, None]) == "–"


def _runs(codd_at_one_token: float) -> dict:
    """One seed's in-distribution rows: one token masked, where sequential and one-step are one number."""
    row = lambda one_step, seq, codd: {"one_step": {"mean": one_step}, "sequential_best": {"mean": seq},  # noqa: E731
                                      "codd": {"mean": codd}, "codd_gain": {"mean": one_step - codd},
                                      "gap_closed": (one_step - codd) / (one_step - seq) if one_step > seq else None}
    rows = {"1 token": row(0.342, 0.342, codd_at_one_token), "0.5": row(0.643, 0.484, 0.52),
            "0.9": row(1.088, 0.674, 0.80)}
    return {0: {"sets": {"in_distribution": {"rows": rows}}}}


def test_the_ordering_allows_float32_rounding_but_not_a_real_gain():
    held = demo_seeds.targets(_runs(0.342 - 4e-6))[0]       # the dependence-only product, computed in float32
    assert held.startswith("- sequential ≤ CoDD ≤ one-step at every masked count: met") and "1 token" in held
    broken = demo_seeds.targets(_runs(0.342 - 1e-3))[0]      # a circuit that repairs the one masked token
    assert ": missed (holds at 0.5, 0.9)" in broken
