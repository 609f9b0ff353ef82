"""The HMM benchmark script runs end to end at tiny sizes and writes its table, section and plot.

No timing assertions: only that the report is produced (and so that ours agreed with the dense
forward and hmmlearn, which the script asserts before it times anything).
"""
import importlib.util
import pathlib
import sys

import pytest
import torch

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_hmm.py"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("hmmlearn")
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("bench_hmm", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                      # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_quick_run_prints_the_ratio_table_and_writes_outputs(bench, tmp_path, capsys):
    out = tmp_path / "docs" / "benchmarks.md"
    threads = torch.get_num_threads()
    text = bench.main(["--quick", "--threads", "1", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert torch.get_num_threads() == threads          # the script restores the global setting
    assert text in printed and "torch threads 1" in printed and "torch " + torch.__version__ in printed
    rows = [line for line in text.splitlines() if line.startswith("| cpu |")]
    assert len(rows) == 2 * 4                            # ratio and time tables, 2 H x 2 V each
    assert all(line.count("|") == 12 for line in rows[:4])   # 3 keys + 4 vs hand + 4 vs hmmlearn
    assert "fwd+bwd vs hand" in text and "Targets:" in text and "n/a" in text
    section = out.read_text()
    assert bench.MARK_BEGIN in section and bench.MARK_END in section and "(benchmarks_hmm.png)" in section
    assert (tmp_path / "docs" / "benchmarks_hmm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_section_replaces_its_previous_version_and_keeps_the_rest(bench, tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nintro\n")
    bench.write_section(path, "first")
    path.write_text(path.read_text() + "\n## Other section\n")
    bench.write_section(path, "second")
    text = path.read_text()
    assert text.count(bench.MARK_BEGIN) == 1 and "first" not in text and "second" in text
    assert text.startswith("# Benchmarks\n\nintro\n") and "## Other section" in text


def test_dense_reference_matches_the_compiled_hmm_and_rejects_bad_shapes(bench):
    import structures
    model = structures.compile(structures.hmm(5, 3, 4, seed=1), dtype=torch.float64)
    dense = bench.dense_from_compiled(model)
    x = torch.randint(0, 4, (6, 5))
    soft = torch.randn(6, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(dense.log_prob(x), model.log_prob(x))
    unobserved = torch.zeros_like(x, dtype=torch.bool)
    torch.testing.assert_close(dense.soft_log_normalizer(soft), model.log_prob(x, unobserved, soft))
    with pytest.raises(ValueError, match="transition_logits"):
        bench.DenseHMM(torch.zeros(3), torch.zeros(3, 2), torch.zeros(3, 4))
