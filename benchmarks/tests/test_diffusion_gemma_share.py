"""The DiffusionGemma share benchmark (``benchmarks.diffusion_gemma_share``) runs end to end at tiny sizes and
prints its table. No timing assertions: only that every row is produced."""
import pytest

pytest.importorskip("transformers")
from benchmarks import diffusion_gemma_share as bench  # noqa: E402


def test_tiny_run_prints_one_row_per_proposal(capsys):
    text = bench.main(["--vocab", "64", "--hidden", "64", "--layers", "2", "--canvas", "8", "--prompt", "4",
                       "--states", "4", "--top-k", "8", "--budget", "0", "--threads", "1"])
    assert text in capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| ") and "ms)" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| model's proposal (factorized)", "| CoDD HMM H=4, full",
                                                 "| CoDD HMM H=4, top_k=8"]
