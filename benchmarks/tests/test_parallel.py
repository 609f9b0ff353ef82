"""The parallel-decoding benchmark (``python -m benchmarks.parallel``) runs end to end at tiny sizes:
it trains (then reloads) its models, measures every decoder, and writes its sections and plots. The
circuit designed for a task's rules makes every one-step CoDD draw valid, whatever the tiny backbone."""
import pytest

from benchmarks import parallel
from benchmarks.report import markers

pytest.importorskip("matplotlib")


def test_quick_run_writes_every_section_and_reuses_its_models(tmp_path, capsys):
    out, work = tmp_path / "parallel.md", tmp_path / "work"
    args = ["--quick", "--tasks", "permutations-4,latin-4", "--samples", "12", "--work", str(work), "--out", str(out),
            "--threads", "1"]
    assert parallel.main(args) == 0
    text = out.read_text()
    for key in ("targets", "permutations-4", "latin-4", "completion"):
        begin, end = markers(key)
        assert text.count(begin) == 1 and text.count(end) == 1
    for task in ("permutations-4", "latin-4"):
        assert (tmp_path / f"parallel_{task}.png").read_bytes()[:4] == b"\x89PNG"
        assert "| CoDD (designed) | 1 | 1.00 | 0.0 |" in text                       # one call per item
    assert "Fast-dLLM threshold" in text and "EB-sampler" in text and "ReMDM" in text and "AR product" in text
    assert "- latin-4, one step per block" in text and "CoDD (designed) 1.000" in text
    capsys.readouterr()
    assert parallel.main(args) == 0                                     # the second run trains nothing
    assert "training" not in capsys.readouterr().out


def test_the_designed_layers_draws_are_valid_in_one_step(tmp_path):
    from benchmarks.parallel_models import prepare
    models = prepare("sudoku-4", tmp_path, quick=True, seed=0, log=lambda *a: None)
    row = parallel.measure(models, parallel.Decoder("CoDD (designed)", "CoDD", 1, dict(codd="joint"), "designed"),
                           samples=16, seed=0)
    assert row["valid"] == 1.0 and row["calls"] == 1.0


def test_bad_options_end_with_one_line_and_status_2(capsys):
    assert parallel.main(["--tasks", "chess"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
