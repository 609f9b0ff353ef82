"""The pieces the GPU rows rest on, checked on CPU at tiny sizes: the top-k proposal (the decoder's
own step on the same circuit with ``top_k``), the LLaDA-shaped step, pyjuice's circuits loaded into
ours; and the CPU measurement of full against top-k (``benchmarks.topk``). No timing assertions."""
import tempfile
from pathlib import Path

import pytest
import torch

import structures
from benchmarks import gpu, topk
from pcdiff.codd import CoDDLayer


@pytest.mark.parametrize("structure", ["hmm", "tree"])
def test_the_topk_proposal_is_the_decoder_step_on_the_same_circuit_for_any_circuit(structure):
    layer = CoDDLayer.from_structure(structure, 4, 5, num_states=3, mask_id=5, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    logits, tokens = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64), torch.full((2, 4), 5)
    masked = torch.ones(2, 4, dtype=torch.bool)
    decoders = gpu.proposal_decoders(layer, 5, 2, gen)
    assert set(decoders) == {"factorized", "CoDD full", "CoDD top-k"}
    restricted = decoders["CoDD top-k"].layer
    assert restricted.circuit is layer.circuit and restricted.top_k == 2 and decoders["CoDD full"].layer.top_k is None
    torch.testing.assert_close(restricted.distribution(logits, None, tokens, masked).marginals(),
                               layer.distribution(logits, None, tokens, masked, top_k=2).marginals())
    step = decoders["CoDD top-k"].step(logits, logits, tokens, masked, 2)
    changed = step != 5
    assert bool((changed.sum(-1) == 2).all())
    assert bool((step.unsqueeze(-1) == logits.topk(2, -1).indices).any(-1)[changed].all())


def test_llada_shaped_step_runs_at_tiny_dimensions_on_cpu():
    pytest.importorskip("transformers")
    config = dict(gpu.LLADA, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                  intermediate_size=64, vocab_size=64)
    run = dict(prompt=4, generate=16, block=8, num_states=4, k=8, batch=2)
    row = gpu.llada_row(0.0, 0, config, run, device="cpu", mask_id=60, max_rounds=3)
    assert set(row["seconds"]) == {"backbone", "factorized", "CoDD full", "CoDD top-k"}
    assert all(v > 0 for v in row["seconds"].values()) and all(v >= 0 for v in row["peak"].values())
    text = gpu.llada_report(row, "cpu")
    assert "CoDD top-k" in text and "overhead" in text and "torch.profiler" in text and "H=4" in text


def test_without_cuda_the_section_is_a_placeholder_saying_what_is_owed():
    section = gpu.run("no CUDA device", log=lambda *a: None)
    assert section.placeholder and section.key == "gpu" and "GPU rows owed: no CUDA device" in section.body


def test_full_against_topk_measures_and_reports_at_tiny_sizes():
    row = topk.measure(dict(H=4, L=6, V=40, B=2, k=5), budget=0.0)
    assert set(row["seconds"]) == {f"{w} {job}" for w in ("full", "top-k") for job in ("decode", "train")}
    text = topk.report(row)
    assert "| decode |" in text and "| train |" in text and "k=5" in text


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
        sizes = dict(variables=6, num_states=4, vocab=8, batch=4, train=200)
        _, circuit, data = gpu.pyjuice_hclt(sizes, 0, juice, Path(tmp) / "hclt.jpc")
    assert circuit.num_vars == 6 and data.shape == (200, 6)
    assert bool(torch.isfinite(structures.compile(circuit).log_prob(data[:4])).all())
