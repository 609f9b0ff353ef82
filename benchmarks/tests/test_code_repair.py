"""The repair-against-training benchmark (``python -m benchmarks.code_repair``) on tiny models: one row
per backbone and item set, its section written between its markers."""
from benchmarks import code_repair


def test_quick_run_writes_a_row_per_backbone_and_item_set(tmp_path):
    out = tmp_path / "results.md"
    assert code_repair.main(["--quick", "--seeds", "0,1", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "<!-- pcdiff-bench:code-repair:begin -->" in text
    for label in ("5 steps", "10 steps"):
        for item_set in ("in distribution", "unseen types"):
            assert f"| {label} | {item_set} |" in text
    assert "CoDD gain, 1 token" in text and " ± " in text


def test_another_layer_gets_a_section_of_its_own(tmp_path):
    out = tmp_path / "results.md"
    assert code_repair.main(["--quick", "--num-states", "4", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    assert "<!-- pcdiff-bench:code-repair-h4-l3:begin -->" in out.read_text()


def test_a_bad_count_is_refused(tmp_path, capsys):
    assert code_repair.main(["--quick", "--samples", "0", "--out", str(tmp_path / "r.md")]) == 2
    assert "--samples" in capsys.readouterr().err
    assert code_repair.main(["--quick", "--num-states", "0", "--out", str(tmp_path / "r.md")]) == 2
    assert "--num-states" in capsys.readouterr().err
