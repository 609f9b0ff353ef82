"""The HMM benchmark (``benchmarks.hmm``, also run by ``benchmarks/bench_hmm.py``) runs end to end at
tiny sizes and writes its table, section and plot; its dense reference computes what ours does.

No timing assertions: only that the report is produced (and so that ours agreed with the dense
forward and hmmlearn, which the benchmark asserts before it times anything).
"""
import pathlib
import subprocess
import sys

import pytest
import torch

import structures
from benchmarks import hmm as bench

pytest.importorskip("hmmlearn")
pytest.importorskip("matplotlib")

SCRIPT = pathlib.Path(bench.__file__).with_name("bench_hmm.py")


def test_quick_run_prints_the_ratio_table_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "docs" / "benchmarks.md"
    threads = torch.get_num_threads()
    text = bench.main(["--quick", "--threads", "1", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert torch.get_num_threads() == threads          # the benchmark restores the global setting
    assert text in printed and "torch threads 1" in printed and "torch " + torch.__version__ in printed
    rows = [line for line in text.splitlines() if line.startswith("| cpu |")]
    assert len(rows) == 2 * 4                            # ratio and time tables, 2 H x 2 V each
    assert all(line.count("|") == 12 for line in rows[:4])   # 3 keys + 4 vs hand + 4 vs hmmlearn
    assert "fwd+bwd vs hand" in text and "Targets:" in text and "n/a" in text
    assert "Command: `python benchmarks/bench_hmm.py --quick --threads 1 --device cpu --out" in text
    section = out.read_text()
    assert bench.MARK_BEGIN in section and bench.MARK_END in section and "(benchmarks_hmm.png)" in section
    assert (tmp_path / "docs" / "benchmarks_hmm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_script_runs_from_any_folder_and_is_a_thin_wrapper(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--device", "cpu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "fwd+bwd vs hand" in done.stdout and "Command: `python benchmarks/bench_hmm.py --quick" in done.stdout
    assert len(SCRIPT.read_text().splitlines()) < 15


def test_dense_reference_matches_the_compiled_hmm_and_rejects_bad_shapes():
    model = structures.compile(structures.hmm(5, 3, 4, seed=1), dtype=torch.float64)
    dense = bench.dense_from_compiled(model)
    x = torch.randint(0, 4, (6, 5))
    soft = torch.randn(6, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(dense.log_prob(x), model.log_prob(x))
    unobserved = torch.zeros_like(x, dtype=torch.bool)
    torch.testing.assert_close(dense.soft_log_normalizer(soft), model.log_prob(x, observed=unobserved,
                                                                                soft_evidence=soft))
    with pytest.raises(ValueError, match="transition_logits"):
        bench.DenseHMM(torch.zeros(3), torch.zeros(3, 2), torch.zeros(3, 4))


def test_the_tables_of_anything_but_a_homogeneous_hmm_are_refused():
    model = structures.compile(structures.hmm(4, 3, 5, homogeneous=False, seed=0))
    with pytest.raises(ValueError, match="homogeneous"):
        bench.hmm_tables(model)
