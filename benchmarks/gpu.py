"""The CUDA rows: our engine against pyjuice, and the CoDD layer's share of a step at LLaDA-8B shapes.

* **pyjuice**: the same circuit in both engines, forward and forward + backward over a batch of
  fully observed samples: a homogeneous HMM (L=32, H=1,024, V=32,768, batch 64; pyjuice's own
  ``structures.HMM`` given our parameters) and an HCLT (pyjuice's ``structures.HCLT`` on synthetic
  data, loaded into ours through its ``.jpc`` file). pyjuice's backward computes parameter flows
  (EM statistics), ours the gradient w.r.t. every parameter: the same passes, different outputs.
  pyjuice is timed as compiled, with and without its CUDA graphs; log-likelihoods are compared
  before timing. Target: ours faster.
* **LLaDA-8B shapes**: a randomly initialized Llama of LLaDA-8B's dimensions in bf16 (hidden 4,096,
  32 layers, 32 heads, MLP 12,288, vocabulary 126,464; causal attention, which costs the same as
  LLaDA's bidirectional one), a sequence of a 256-token prompt and 512 generated positions, the
  current block of 32 half masked; the static HMM layer (H=1,024, V=126,464, float32). A step is
  the backbone forward plus a proposal: factorized, CoDD full (exact joint sample + marginals), or
  CoDD top-k (the same decoder step on the same circuit with ``top_k`` = 1,024: exact on each masked
  position's 1,024 most likely tokens; :mod:`benchmarks.topk` sets it against the full layer on CPU).
  Target: overhead ≤ 3%.

Without CUDA nothing runs and the section says what is owed.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

import structures

from pcdiff.backbones import HFBackbone
from pcdiff.codd import CoDDLayer
from pcdiff.decode import BlockDecoder

from .common import MEMORY_HOW, mark, markdown_table, mib, peak_memory, warm_then_time
from .hmm import hmm_tables
from .report import Section

KEY, TITLE = "gpu", "GPU: ours vs pyjuice, and the CoDD layer at LLaDA-8B shapes"
DEFAULT_BUDGET = 10.0
TARGET_OVERHEAD = 0.03
LLADA = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
             intermediate_size=12288, vocab_size=126464, max_position_embeddings=4096, rope_theta=500000.0,
             rms_norm_eps=1e-5, tie_word_embeddings=False)
LLADA_MASK_ID = 126336
#: prompt, generated positions, block length, circuit latent states, top-k candidates, batch
LLADA_RUN = dict(prompt=256, generate=512, block=32, num_states=1024, k=1024, batch=1)
PYJUICE_HMM = dict(length=32, num_states=1024, vocab=32768, batch=64)
PYJUICE_HCLT = dict(variables=256, num_states=256, vocab=256, batch=512, train=2000)


# --------------------------------------------------------------------------------------- pyjuice
def pyjuice_hmm(model: structures.CompiledCircuit, juice):
    """pyjuice's homogeneous HMM holding our parameters (transition rows: P(z_{t+1} | z_t))."""
    initial, transition, emission = (torch.softmax(t.detach().float().cpu(), -1) for t in hmm_tables(model))
    length, num_states, vocab = model.num_vars, transition.shape[0], model.vocab_size
    return juice.structures.HMM(length, num_states, vocab, homogeneous=True, alpha=transition, beta=emission,
                                gamma=initial[0])


def pyjuice_hclt(sizes: dict, seed: int, juice, path: Path):
    """pyjuice's HCLT on synthetic data, saved to ``path``, and the same circuit loaded into ours.

    Variable i is its heap parent (i-1)//2 plus small noise, so the Chow-Liu tree is about balanced
    (a chain-shaped tree hundreds of levels deep would hit the recursion limit of ours' compiler).
    """
    gen = torch.Generator().manual_seed(seed)
    n, v = sizes["variables"], sizes["vocab"]
    data = torch.randint(0, v, (sizes["train"], n), generator=gen)
    noise = torch.randint(-8, 9, (sizes["train"], n), generator=gen)
    for i in range(1, n):
        data[:, i] = (data[:, (i - 1) // 2] + noise[:, i]) % v
    # num_bins only coarsens the values for the mutual informations that pick the tree
    ns = juice.structures.HCLT(data, num_latents=sizes["num_states"], num_bins=min(32, v),
                               input_node_params={"num_cats": v})
    ns.init_parameters()
    juice.save(str(path), ns)
    return ns, structures.load_jpc(path), data


def engine_contenders(model, pc, x) -> dict:
    params = list(model.parameters())

    def ours_bwd():
        return torch.autograd.grad(model.log_prob(x).sum(), params)

    def juice(graph: bool, backward: bool):
        def call():
            with torch.no_grad():
                pc(x, record_cudagraph=graph, apply_cudagraph=graph)
                if backward:
                    pc.backward(x, flows_memory=1.0, record_cudagraph=graph, apply_cudagraph=graph)
        return call
    return {"ours fwd": torch.no_grad()(lambda: model.log_prob(x)), "ours fwd+bwd": ours_bwd,
            "pyjuice fwd": juice(False, False), "pyjuice fwd+bwd": juice(False, True),
            "pyjuice+graph fwd": juice(True, False), "pyjuice+graph fwd+bwd": juice(True, True)}


def compare_engines(name: str, model, ns, x, budget: float, juice) -> dict:
    pc = juice.compile(ns, verbose=False)
    pc.to(x.device)
    with torch.no_grad():
        ours, theirs = model.log_prob(x), pc(x)[:, 0]
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-3, atol=1e-2,
                               msg=lambda m: f"{name}: ours and pyjuice disagree on log-likelihoods: {m}")
    seconds, rounds = warm_then_time(engine_contenders(model, pc, x), budget, 3, 50, x.device)
    return {"name": name, "rounds": rounds, "seconds": seconds}


def pyjuice_rows(budget: float, seed: int, log) -> list[dict]:
    import pyjuice as juice
    s = PYJUICE_HMM
    model = structures.compile(structures.hmm(s["length"], s["num_states"], s["vocab"], seed=seed), device="cuda")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, s["vocab"], (s["batch"], s["length"]), generator=gen).cuda()
    rows = [compare_engines(f"HMM L={s['length']} H={s['num_states']} V={s['vocab']} B={s['batch']}", model,
                            pyjuice_hmm(model, juice), x, budget, juice)]
    log(f"  gpu pyjuice {rows[-1]['name']}: {rows[-1]['rounds']} rounds")
    h = PYJUICE_HCLT
    with tempfile.TemporaryDirectory() as tmp:
        ns, circuit, data = pyjuice_hclt(h, seed, juice, Path(tmp) / "hclt.jpc")
    model = structures.compile(circuit, device="cuda")
    x = data[:h["batch"]].cuda()
    rows.append(compare_engines(f"HCLT {h['variables']} vars H={h['num_states']} V={h['vocab']} B={h['batch']}",
                                model, ns, x, budget, juice))
    log(f"  gpu pyjuice {rows[-1]['name']}: {rows[-1]['rounds']} rounds")
    return rows


def pyjuice_report(rows: list[dict]) -> str:
    head = ["circuit", "rounds", "ours fwd ms", "ours fwd+bwd ms", "pyjuice fwd ms", "pyjuice fwd+bwd ms",
            "pyjuice+graph fwd ms", "pyjuice+graph fwd+bwd ms", "fwd: best pyjuice / ours",
            "fwd+bwd: best pyjuice / ours"]
    cells = []
    for r in rows:
        s = r["seconds"]
        best = {v: min(s[f"pyjuice {v}"], s[f"pyjuice+graph {v}"]) for v in ("fwd", "fwd+bwd")}
        names = [f"{who} {v}" for who in ("ours", "pyjuice", "pyjuice+graph") for v in ("fwd", "fwd+bwd")]
        cells.append([r["name"], str(r["rounds"])] + [f"{1e3 * s[n]:.2f}" for n in names] +
                     [mark(best[v] / s[f"ours {v}"], 1.0) for v in ("fwd", "fwd+bwd")])
    return markdown_table(head, cells)


# ------------------------------------------------------------------------------------- LLaDA shape
def llada_backbone(config: dict, mask_id: int, device, dtype=torch.bfloat16) -> HFBackbone:
    """A randomly initialized Llama of the given dimensions, built directly in ``dtype`` on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**config))
    finally:
        torch.set_default_dtype(previous)
    return HFBackbone(model.eval().requires_grad_(False), mask_id=mask_id)


def llada_parts(backbone, layer, run: dict, seed: int) -> dict:
    """Backbone forward and the three proposals for the current block, as zero-argument calls."""
    device, block = backbone.device, run["block"]
    gen = torch.Generator(device=device).manual_seed(seed)
    length = run["prompt"] + run["generate"]
    x = torch.randint(0, backbone.mask_id, (run["batch"], length), generator=gen, device=device)
    lo = run["prompt"] + (run["generate"] // 2 // block) * block         # a block halfway through
    x[:, lo + block // 2:] = backbone.mask_id                            # its second half and all later blocks masked
    with torch.no_grad():
        out = backbone(x)
    logits, hidden = out.logits[:, lo:lo + block], out.hidden[:, lo:lo + block]
    tokens, masked = x[:, lo:lo + block], x[:, lo:lo + block] == backbone.mask_id
    count = block // 4
    decoders = proposal_decoders(layer, backbone.mask_id, run["k"], gen)
    del out

    def step(decoder):
        return torch.no_grad()(lambda: decoder.step(logits, hidden, tokens, masked, count))
    return {"backbone": torch.no_grad()(lambda: backbone(x)), **{name: step(d) for name, d in decoders.items()}}


def proposal_decoders(layer: CoDDLayer, mask_id: int, k: int, generator) -> dict[str, BlockDecoder]:
    """The three proposals of a step as decoders: factorized, CoDD full (the layer's exact joint
    sample + marginals) and CoDD top-k (the same on the same circuit, restricted to each masked
    position's ``k`` most likely tokens)."""
    restricted = CoDDLayer(layer.circuit, layer.adapter, temperature=layer.temperature, mask_id=mask_id, top_k=k)
    return {name: BlockDecoder(which, mask_id=mask_id, codd=codd, generator=generator)
            for name, which, codd in (("factorized", layer, "off"), ("CoDD full", layer, "joint"),
                                      ("CoDD top-k", restricted, "joint"))}


def llada_row(budget: float, seed: int, config: dict = LLADA, run: dict = LLADA_RUN, device="cuda",
              mask_id: int = LLADA_MASK_ID, max_rounds: int = 30) -> dict:
    """Medians, rounds and peak memory of every part (``config``/``run`` shrink it for tests)."""
    torch.manual_seed(seed)
    backbone = llada_backbone(config, mask_id, device)
    layer = CoDDLayer.from_structure("hmm", run["block"], backbone.vocab_size, num_states=run["num_states"],
                                     mask_id=mask_id, seed=seed, device=device)
    parts = llada_parts(backbone, layer, run, seed)
    seconds, rounds = warm_then_time(parts, budget, 3, max_rounds, device)
    peak = {name: peak_memory(fn, device) for name, fn in parts.items()}
    return {"seconds": seconds, "rounds": rounds, "peak": peak, "run": dict(run),
            "parameters": sum(p.numel() for p in backbone.parameters())}


def llada_report(row: dict, device: str = "cuda") -> str:
    s, bb = row["seconds"], row["seconds"]["backbone"]
    head = ["part", "median ms", "step overhead vs factorized", "peak MiB"]
    cells = []
    for name in ("backbone", "factorized", "CoDD full", "CoDD top-k"):
        overhead = (bb + s[name]) / (bb + s["factorized"]) - 1
        verdict = f"{100 * overhead:.1f}% {'✓' if overhead <= TARGET_OVERHEAD else '✗'}"
        cells.append([name, f"{1e3 * s[name]:.2f}", verdict if name.startswith("CoDD") else "",
                      mib(row["peak"][name])])
    r = row["run"]
    notes = [f"- Backbone: {row['parameters'] / 1e9:.2f}B parameters, bf16, random weights; batch {r['batch']}, "
             f"{r['prompt']} prompt + {r['generate']} generated positions; block {r['block']} half masked; "
             f"layer: static HMM H={r['num_states']}, float32; top-k k={r['k']}. {row['rounds']} interleaved rounds.",
             "- step overhead = (backbone + proposal) / (backbone + factorized) − 1.",
             "- CoDD top-k: the exact joint sample and marginals over each position's k candidates "
             "(`structures.CandidateEvidence`).",
             f"- Peak memory: {MEMORY_HOW[device]}."]
    return "\n".join([markdown_table(head, cells), "", *notes])


def run(missing: str | None = None, budget: float | None = None, seed: int = 0, log=print) -> Section:
    """The GPU section; when ``missing`` names why it cannot run here, a placeholder saying so."""
    if missing is not None:
        log(f"  GPU rows owed: {missing}")
        body = (f"GPU rows owed: {missing}. Run `pcdiff bench --only gpu` on a machine with CUDA (and pyjuice "
                "installed) to fill this section: ours vs pyjuice (HMM L=32 H=1024 V=32768 B=64, and an HCLT), "
                "and the CoDD layer's share of a decoding step at LLaDA-8B shapes, full and top-k.")
        return Section(KEY, TITLE, body, placeholder=True)
    budget = budget or DEFAULT_BUDGET
    parts = ["ours vs pyjuice (compiled), forward and forward + backward:", ""]
    # Each half reports its own failure in the section instead of ending the whole run: these rows
    # only run on machines that are rarely at hand.
    try:
        parts.append(pyjuice_report(pyjuice_rows(budget, seed, log)))
    except ImportError as err:
        parts.append(f"pyjuice rows owed: pyjuice is not installed ({err}).")
    except Exception as err:  # noqa: BLE001
        parts.append(f"pyjuice rows FAILED: {type(err).__name__}: {err}")
    torch.cuda.empty_cache()
    parts += ["", "CoDD layer's share of a decoding step at LLaDA-8B shapes:", ""]
    start = time.perf_counter()
    try:
        row = llada_row(budget, seed)
        log(f"  gpu LLaDA-8B shape: {row['rounds']} rounds, {time.perf_counter() - start:.1f} s")
        parts.append(llada_report(row))
    except Exception as err:  # noqa: BLE001
        parts.append(f"LLaDA-shape rows FAILED: {type(err).__name__}: {err}")
    torch.cuda.empty_cache()
    for line in parts:
        if "FAILED" in line:
            log("  " + line)
    return Section(KEY, TITLE, "\n".join(parts))
