"""`pcdiff bench` end to end, through the command line in a subprocess: the quick run writes every
section and plot, ``--only`` replaces its own sections (a placeholder never replaces a measurement),
bad options end with one line and exit status 2. No test here imports the benchmark code (it lives
in benchmarks/, tested in benchmarks/tests/); no timing assertions anywhere.
"""
import subprocess
import sys

import pytest
import torch

pytest.importorskip("hmmlearn")
pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"
PARTS = ("hmm", "layer", "memory", "gpu")


def begin(key: str) -> str:
    return f"<!-- pcdiff-bench:{key}:begin -->"


def end(key: str) -> str:
    return f"<!-- pcdiff-bench:{key}:end -->"


def bench(*options: str, cwd) -> subprocess.CompletedProcess:
    """``python -m pcdiff bench OPTIONS`` run from ``cwd`` (not the checkout)."""
    return subprocess.run([sys.executable, "-m", "pcdiff", "bench", *options], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_quick_run_writes_every_section_and_plot(tmp_path):
    out = tmp_path / "docs" / "benchmarks.md"
    done = bench("--quick", "--threads", "1", "--device", "cpu", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "torch threads 1" in done.stdout and "GPU rows owed:" in done.stdout
    text = out.read_text()
    for key in PARTS:
        assert text.count(begin(key)) == 1 and text.count(end(key)) == 1
    for key in ("hmm", "layer", "memory"):
        assert (out.parent / f"benchmarks_{key}.png").read_bytes()[:8] == PNG
    assert "Command: `pcdiff bench --quick --threads 1 --device cpu`" in text and "Machine: CPU" in text
    assert "| 13 | 27 | 1M |" in text and "overhead" in text and "decode peak MiB" in text
    assert text.count("smoke-test sizes") == 3


def test_only_replaces_its_own_section_and_a_placeholder_never_replaces_a_measurement(tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text(f"# Benchmarks\n\n{begin('gpu')}\n## GPU\n\nmeasured on an H100\n{end('gpu')}\n\n"
                   f"{begin('layer')}\n## Layer\n\nold layer rows\n{end('layer')}\n\nhand-written notes\n")
    done = bench("--quick", "--threads", "1", "--device", "cpu", "--only", "layer,gpu", "--out", str(out),
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "measured on an H100" in text and "GPU rows owed" not in text
    assert "old layer rows" not in text and "| 13 | 27 | 1M |" in text and "hand-written notes" in text
    assert "Command: `pcdiff bench --quick --threads 1 --device cpu --only layer,gpu`" in text
    assert begin("hmm") not in text                                  # parts not asked for are not touched


BAD = [(["--only", "hmm,nope"], "unknown part"), (["--threads", "0"], "--threads"), (["--budget", "-1"], "--budget")]
if not torch.cuda.is_available():                                   # the message of a CPU-only machine
    BAD.append((["--device", "cuda"], "CUDA is not available"))


@pytest.mark.parametrize("options, message", BAD)
def test_bad_options_end_with_one_line_and_status_2(tmp_path, options, message):
    done = bench("--quick", "--out", str(tmp_path / "b.md"), *options, cwd=tmp_path)
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("pcdiff bench: error: ") and message in err
    assert not (tmp_path / "b.md").exists()
