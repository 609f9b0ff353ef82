"""DiffusionGemma (transformers' native uniform-noise block diffusion) as a pcdiff backbone: the canvas loop
reproduces ``model.generate`` token for token, CoDD joint proposals on its canvas, a layer trained on it
frozen, and loading from a save_pretrained folder.

The model's ``generate`` draws from torch's global generator, so the parity tests seed it globally before
each of the two calls (``generate_canvas`` with ``generator=None`` draws the same numbers in the same order).
"""
import itertools
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from pcdiff.backbones import DiffusionGemmaBackbone, load_hf_backbone  # noqa: E402
from pcdiff.codd import CoDDLayer  # noqa: E402
from pcdiff.decode.canvas import generate_canvas  # noqa: E402

VOCAB, CANVAS = 64, 8


def tiny_config(vocab=VOCAB, canvas=CANVAS, hidden=32, layers=2):
    """The smallest DiffusionGemma that builds: text only in use, a one-layer 16-wide vision tower."""
    text = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16, global_head_dim=16, sliding_window=16,
                num_experts=2, top_k_experts=1, moe_intermediate_size=hidden,
                layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"])
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=1, num_key_value_heads=1, head_dim=16)
    return transformers.DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas)


@pytest.fixture(scope="module")
def model():
    hf_logging.set_verbosity_error()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.DiffusionGemmaForBlockDiffusion(tiny_config()).eval()
        model.generate(torch.zeros(1, 2, dtype=torch.long), max_new_tokens=CANVAS, max_denoising_steps=1)  # lazy set-up
    return model


@pytest.fixture(scope="module")
def backbone(model):
    return DiffusionGemmaBackbone(model)


@pytest.fixture(scope="module")
def prompt():
    return torch.tensor([[5, 17, 2, 40, 33], [9, 9, 61, 0, 12], [63, 1, 30, 30, 7]])


# the model's settings: defaults but few steps; large bound, low temperature, early stops firing per row;
# frequent EOS ids (rows end, later blocks padded, the loop ending before its last block)
SETTINGS = [dict(steps=4, t_min=0.4, t_max=0.8, entropy_bound=0.1, stability_threshold=1, confidence_threshold=0.005),
            dict(steps=8, t_min=0.05, t_max=0.3, entropy_bound=0.5, stability_threshold=0, confidence_threshold=3.5),
            dict(steps=3, t_min=0.4, t_max=0.8, entropy_bound=0.1, stability_threshold=1, confidence_threshold=0.005,
                 eos_token_id=list(range(1, 12)), pad_token_id=0)]


@pytest.mark.parametrize("settings", SETTINGS)
def test_codd_off_reproduces_generate_token_for_token(model, backbone, prompt, settings):
    ends = {k: settings[k] for k in ("eos_token_id", "pad_token_id") if k in settings}
    for seed in range(3):
        torch.manual_seed(seed)
        ref = model.generate(prompt, max_new_tokens=2 * CANVAS, max_denoising_steps=settings["steps"],
                             t_min=settings["t_min"], t_max=settings["t_max"],
                             sampler_config=EntropyBoundSamplerConfig(entropy_bound=settings["entropy_bound"]),
                             stability_threshold=settings["stability_threshold"],
                             confidence_threshold=settings["confidence_threshold"], **ends)
        torch.manual_seed(seed)
        ours = generate_canvas(backbone, prompt, blocks=2, **settings)
        assert torch.equal(ours.tokens, ref.sequences)
        new = ours.tokens[:, prompt.shape[1]:]
        valid = (new != ends["pad_token_id"]).sum(-1) if ends else new.shape[1]
        assert torch.allclose(valid / ours.forward_passes, ref.tokens_per_forward)


def test_eos_ends_rows_in_the_parity_settings(backbone, prompt):
    lengths = set()
    for seed in range(3):
        torch.manual_seed(seed)
        out = generate_canvas(backbone, prompt, blocks=2, **SETTINGS[2])
        lengths.add(out.tokens.shape[1])
        assert bool((out.tokens[:, prompt.shape[1]:] == 0).any())                # padded after an EOS
    assert lengths == {prompt.shape[1] + CANVAS, prompt.shape[1] + 2 * CANVAS}  # some runs end after one block


def test_early_stop_fires_in_the_parity_settings(backbone, prompt):
    torch.manual_seed(0)
    out = generate_canvas(backbone, prompt, blocks=2, **SETTINGS[1])
    assert bool((out.forward_passes < 2 * SETTINGS[1]["steps"]).any())      # the stop path is exercised


def _spy(layer, calls):
    """Record every (tokens, masked) the loop hands the layer."""
    original = layer.distribution

    def distribution(logits, hidden, tokens, masked, *args, **kwargs):
        calls.append((tokens.clone(), masked.clone()))
        return original(logits, hidden, tokens, masked, *args, **kwargs)
    layer.distribution = distribution


@pytest.mark.parametrize("acceptance,top_k", [("entropy_bound", None), ("joint", None), ("joint", 6)])
def test_codd_joint_keeps_accepted_tokens_and_is_deterministic(backbone, prompt, acceptance, top_k):
    layer = CoDDLayer.from_structure("hmm", CANVAS, VOCAB, num_states=4, seed=0, top_k=top_k)
    calls = []
    _spy(layer, calls)
    outs = [generate_canvas(backbone, prompt, blocks=2, steps=5, layer=layer, codd="joint", acceptance=acceptance,
                            generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(outs[0].tokens, outs[1].tokens)
    assert outs[0].tokens.shape == (3, 5 + 2 * CANVAS)
    assert torch.equal(outs[0].tokens[:, :5], prompt)
    calls = calls[:len(calls) // 2]                                            # the first run's
    starts = [i for i, (_, masked) in enumerate(calls) if bool(masked.all())] + [len(calls)]
    blocks = [calls[a:b] for a, b in itertools.pairwise(starts)]               # a block starts all undecided
    assert len(blocks) == 2
    for b, steps in enumerate(blocks):
        for (tok0, masked0), (tok1, masked1) in itertools.pairwise(steps):
            assert not bool((masked1 & ~masked0).any())                        # accepted stays accepted
            assert torch.equal(tok1[~masked0], tok0[~masked0])                 # with its token
        final = outs[0].tokens[:, 5 + b * CANVAS:5 + (b + 1) * CANVAS]
        tok, masked = steps[-1]
        assert torch.equal(final[~masked], tok[~masked])


def test_distribution_ignores_noise_at_positions_to_decide():
    """Uniform noise: mask_id None, random tokens where masked; p̂ depends only on the decided tokens."""
    layer = CoDDLayer.from_structure("hmm", 3, 4, num_states=2, seed=1)
    assert layer.mask_id is None
    logits = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(0))
    masked = torch.tensor([[True, False, True]])
    a = layer.distribution(logits, None, torch.tensor([[3, 2, 1]]), masked)
    b = layer.distribution(logits, None, torch.tensor([[0, 2, 0]]), masked)
    completions = torch.tensor([[x, 2, z] for x in range(4) for z in range(4)]).unsqueeze(1)   # [16, 1, 3]
    log_p = a.log_prob(completions)
    assert torch.allclose(log_p, b.log_prob(completions))
    assert math.isclose(float(log_p.detach().exp().sum()), 1.0, rel_tol=1e-5)
    marg = a.marginals()                                                       # brute force against the enumeration
    expected = torch.zeros(4).index_add_(0, completions[:, 0, 0], log_p[:, 0].detach().exp())
    assert torch.allclose(marg[0, 0], expected, atol=1e-5)


def test_layer_trains_on_a_frozen_backbone_with_uniform_corruption(backbone):
    gen = torch.Generator().manual_seed(0)
    context = torch.randint(0, VOCAB, (16, 4), generator=gen)
    x0 = (torch.arange(CANVAS) * 3 + torch.randint(0, 4, (16, 1), generator=gen)) % VOCAB   # [16, L] coupled rows
    masked = torch.rand(16, CANVAS, generator=gen) < 0.6
    masked[:, 0] = True
    noisy = torch.where(masked, torch.randint(0, VOCAB, x0.shape, generator=gen), x0)      # uniform corruption
    out = backbone(torch.cat([context, noisy], 1))
    logits, hidden = out.logits[:, 4:], out.hidden[:, 4:]
    assert logits.shape == (16, CANVAS, VOCAB) and hidden.shape == (16, CANVAS, backbone.hidden_size)
    layer = CoDDLayer.from_structure("hmm", CANVAS, VOCAB, num_states=8, seed=0)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    losses = []
    for _ in range(8):
        loss = layer.nll(logits, hidden, x0, masked).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 1.0


def test_compute_states_the_context_as_certain(backbone):
    tokens = torch.randint(0, VOCAB, (2, 3 + CANVAS), generator=torch.Generator().manual_seed(1))
    out = backbone(tokens)
    assert out.logits.shape == (2, 3 + CANVAS, VOCAB) and out.logits.dtype == torch.float32
    assert torch.equal(out.logits[:, :3].argmax(-1), tokens[:, :3])
    assert bool(torch.isfinite(out.logits[:, 3:]).all())
    context = backbone.start(tokens[:, :3])
    assert torch.allclose(backbone.decode(context, tokens[:, 3:]).logits, out.logits[:, 3:])
    with pytest.raises(ValueError, match="context token"):
        backbone(tokens[:, :CANVAS])


def test_load_hf_backbone_dispatches_a_saved_diffusion_gemma(model, backbone, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = load_hf_backbone(str(tmp_path))
    assert isinstance(loaded, DiffusionGemmaBackbone)
    assert (loaded.noise, loaded.mask_id, loaded.vocab_size, loaded.canvas_length) == ("uniform", None, VOCAB, CANVAS)
    tokens = torch.randint(0, VOCAB, (2, 2 + CANVAS), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(loaded(tokens).logits, backbone(tokens).logits, atol=1e-6)
    with pytest.raises(ValueError, match="no mask id"):
        load_hf_backbone(str(tmp_path), mask_id=3)


def test_arguments_are_checked(backbone, prompt):
    layer = CoDDLayer.from_structure("hmm", CANVAS, VOCAB, num_states=2, seed=0)
    with pytest.raises(ValueError, match="acceptance='joint' needs"):
        generate_canvas(backbone, prompt, acceptance="joint")
    with pytest.raises(ValueError, match="needs a layer"):
        generate_canvas(backbone, prompt, codd="joint")
    with pytest.raises(ValueError, match="keep_accepted"):
        generate_canvas(backbone, prompt, codd="joint", layer=layer, keep_accepted=False)
    with pytest.raises(ValueError, match="layer covers"):
        generate_canvas(backbone, prompt, codd="joint", layer=CoDDLayer.from_structure("hmm", 4, VOCAB, num_states=2))
    with pytest.raises(ValueError, match="steps"):
        generate_canvas(backbone, prompt, steps=0)
    with pytest.raises(ValueError, match="t_max"):
        generate_canvas(backbone, prompt, t_min=0.5, t_max=0.4)
