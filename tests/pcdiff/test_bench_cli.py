"""`pcdiff bench`: the quick run end to end, section bookkeeping, option errors, and the pieces the
GPU rows rest on, checked on CPU at tiny sizes (top-k marginals, the LLaDA-shaped step, pyjuice's
circuits loaded into ours). No timing assertions anywhere.
"""
import tempfile
from pathlib import Path

import pytest
import torch

import structures
from pcdiff.bench import common, gpu, parse_parts, report
from pcdiff.bench.topk import topk_marginals, topk_step
from pcdiff.cli import main
from pcdiff.layer import CoDDLayer

pytest.importorskip("hmmlearn")
pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def test_quick_run_writes_every_section_and_plot(tmp_path, capsys):
    out = tmp_path / "docs" / "benchmarks.md"
    threads = torch.get_num_threads()
    assert main(["bench", "--quick", "--threads", "1", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert torch.get_num_threads() == threads
    assert "torch threads 1" in printed and "GPU rows owed:" in printed
    text = out.read_text()
    for key in ("hmm", "layer", "memory", "gpu"):
        begin, end = report.markers(key)
        assert text.count(begin) == 1 and text.count(end) == 1
    for key in ("hmm", "layer", "memory"):
        assert (out.parent / f"benchmarks_{key}.png").read_bytes()[:8] == PNG
    assert "Command: `pcdiff bench --quick --threads 1 --device cpu`" in text and "Machine: CPU" in text
    assert "| 13 | 27 | 1M |" in text and "overhead" in text and "decode peak MiB" in text
    assert text.count("smoke-test sizes") == 3


def test_only_replaces_its_own_section_and_a_placeholder_never_replaces_a_measurement(tmp_path, capsys):
    out = tmp_path / "benchmarks.md"
    measured = report.Section(gpu.KEY, gpu.TITLE, "measured on an H100")
    report.write_sections(out, [measured, report.Section("layer", "Layer", "old layer rows")])
    out.write_text(out.read_text() + "\nhand-written notes\n")
    assert main(["bench", "--quick", "--threads", "1", "--device", "cpu", "--only", "layer,gpu",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert "measured on an H100" in text and "GPU rows owed" not in text
    assert "old layer rows" not in text and "| 13 | 27 | 1M |" in text and "hand-written notes" in text
    assert report.markers("hmm")[0] not in text                  # parts not asked for are not touched


@pytest.mark.parametrize("argv, message", [
    (["--only", "hmm,nope"], "unknown part"),
    (["--threads", "0"], "--threads"),
    (["--budget", "-1"], "--budget"),
])
def test_bad_options_end_with_one_line_and_status_2(tmp_path, capsys, argv, message):
    assert main(["bench", "--quick", "--out", str(tmp_path / "b.md"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b.md").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_device_cuda_without_a_gpu_is_a_user_error(tmp_path, capsys):
    assert main(["bench", "--quick", "--device", "cuda", "--out", str(tmp_path / "b.md")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_parts_parse_from_repeats_and_comma_lists():
    assert parse_parts(None) == ["hmm", "layer", "memory", "gpu"]
    assert parse_parts(["gpu", "memory,hmm"]) == ["hmm", "memory", "gpu"]
    with pytest.raises(ValueError):
        parse_parts([","])


def test_peak_memory_counts_what_the_call_allocates_and_not_what_was_there():
    before = torch.ones(4 * 2 ** 20)                                     # 16 MiB alive before the call

    def allocate():
        a = torch.ones(2 ** 20)                                          # 4 MiB
        b = torch.ones(2 ** 20)                                          # 4 MiB, both alive: peak 8 MiB
        return float(a.sum() + b.sum() + before[0])
    peak = common.peak_memory(allocate)
    assert 8 * 2 ** 20 <= peak < 9 * 2 ** 20


def _layer_and_block(seed=0, length=5, vocab=12, hidden=4, batch=3):
    gen = torch.Generator().manual_seed(seed)
    layer = CoDDLayer.from_structure("hmm", length, vocab, hidden=hidden, mask_id=vocab, dtype=torch.float64)
    logits = 2 * torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64)
    masked = torch.rand(batch, length, generator=gen) < 0.6
    masked[:, 0] = True
    tokens = torch.where(masked, vocab, torch.randint(0, vocab, (batch, length), generator=gen))
    return layer, logits, tokens, masked


@pytest.mark.parametrize("k", [12, 4])
def test_topk_marginals_are_the_exact_marginals_of_the_restricted_evidence(k):
    layer, logits, tokens, masked = _layer_and_block()
    probs, ids = topk_marginals(layer, logits, tokens, masked, k)
    keep = torch.zeros_like(masked.unsqueeze(-1).expand_as(logits)).scatter(-1, logits.topk(k, -1).indices, True)
    expected = layer.distribution(logits.masked_fill(~keep, float("-inf")), None, tokens, masked).marginals()
    got = torch.zeros_like(expected).scatter(-1, ids, probs)
    torch.testing.assert_close(got[masked], expected[masked])
    step = topk_step(layer, logits, tokens, masked, count=1, k=k, generator=torch.Generator().manual_seed(0))
    changed = step != tokens
    assert bool((changed.sum(-1) == 1).all()) and bool(masked[changed].all())
    assert bool(keep.gather(-1, step.clamp(max=11).unsqueeze(-1)).squeeze(-1)[changed].all())


def test_llada_shaped_step_runs_at_tiny_dimensions_on_cpu():
    pytest.importorskip("transformers")
    config = dict(gpu.LLADA, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                  intermediate_size=64, vocab_size=64)
    run = dict(prompt=4, generate=16, block=8, hidden=4, k=8, batch=2)
    row = gpu.llada_row(0.0, 0, config, run, device="cpu", mask_id=60, max_rounds=3)
    assert set(row["seconds"]) == {"backbone", "factorized", "CoDD full", "CoDD top-k"}
    assert all(v > 0 for v in row["seconds"].values()) and all(v >= 0 for v in row["peak"].values())
    text = gpu.llada_report(row, "cpu")
    assert "CoDD top-k" in text and "overhead" in text and "torch.profiler" in text


@pytest.mark.pyjuice
def test_pyjuice_circuits_load_into_ours_with_the_same_parameters():
    juice = pytest.importorskip("pyjuice")
    model = structures.compile(structures.hmm(6, 4, 7, seed=3), dtype=torch.float64)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hmm.jpc"
        juice.save(str(path), gpu.pyjuice_hmm(model, juice))          # pyjuice's HMM given our parameters
        theirs = structures.compile(structures.load_jpc(path), dtype=torch.float64)
        x = torch.randint(0, 7, (5, 6))
        torch.testing.assert_close(theirs.log_prob(x), model.log_prob(x), rtol=1e-5, atol=1e-5)
        sizes = dict(variables=6, hidden=4, vocab=8, batch=4, train=200)
        _, circuit, data = gpu.pyjuice_hclt(sizes, 0, juice, Path(tmp) / "hclt.jpc")
    assert circuit.num_vars == 6 and data.shape == (200, 6)
    assert bool(torch.isfinite(structures.compile(circuit).log_prob(data[:4])).all())
