"""The code-faults benchmark (``python -m benchmarks.code_faults --quick``): every line sorted into one
cause, the shares summing to one, and its "tokenizes" share the very rate code_lines judged."""
import math

import pytest

from benchmarks import code_faults, code_lines
from benchmarks.judged_models import trained
from benchmarks.report import markers


def test_quick_run_writes_its_section(tmp_path):
    out = tmp_path / "results.md"
    args = ["--quick", "--samples", "6", "--work", str(tmp_path / "work"), "--out", str(out), "--threads", "1",
            "--steps", "2,4"]
    assert code_faults.main(args) == 0
    text = out.read_text()
    begin, end = markers("code-faults")
    assert text.count(begin) == 1 and text.count(end) == 1
    assert "| steps per block | decoder | malformed | tokenizes | mismatched bracket |" in text
    assert text.count("| – | held-out lines | ") == 1
    for steps in (2, 4):
        for decoder, _ in code_lines.DECODERS:
            assert text.count(f"\n| {steps} | {decoder} | ") == 1


def test_the_tokenizes_share_is_code_lines_rate_on_the_same_lines(tmp_path):
    models = trained("python", tmp_path, code_lines.QUICK, 0, max_length=code_lines.MAX_LENGTH, log=lambda *a: None)
    judged = {(r["steps"], r["decoder"]): r for r in code_lines.measure(models, 12, 0, log=lambda *a: None)
              if r["remasking"] == "low_confidence"}
    for row in code_faults.measure(models, 12, 0, [2, 4], log=lambda *a: None):
        assert math.isclose(sum(row[k] for k in code_faults.KINDS), 1.0)
        reference = judged[(row["steps"], row["decoder"])]
        assert row["tokenizes"] == reference["tokenizable"]
        assert row["malformed"] == pytest.approx(1 - reference["well_formed"])


def test_fault_shares_by_hand_and_bad_options():
    shares = code_faults.fault_shares([None, "x = 1", "f(a", "'b", "$"])
    assert shares == {"malformed": 0.2, "tokenizes": 0.2, "mismatched bracket": 0.0, "open string": 0.2,
                      "open bracket": 0.2, "other": 0.2}
    with pytest.raises(ValueError, match="items"):
        code_faults.fault_shares([])
    assert code_faults.main(["--steps", "0"]) == 2 and code_faults.main(["--steps", "four"]) == 2
