"""Backbones of either noise kind (mask | uniform): one corruption for training and decoding, the tiny
backbone's uniform mode and its checkpoints, training on it, and the decoder's (tokens, to_decide)
state: positions still to decide renoised before every call, committed ones clamped."""
import pytest
import torch

import structures
from helpers.stubs import MASK, V, StubBackbone, contextual
from pcdiff.backbones import TinyCausalTransformer, TinyDiffusionTransformer
from pcdiff.backbones.noise import corrupt, noise_fill
from pcdiff.codd import CoDDLayer
from pcdiff.data import ItemData, Vocabulary
from pcdiff.decode import denoise, generate
from pcdiff.decode.step import BlockDecoder
from pcdiff.train import heldout_loss, train_backbone, train_codd_layer
from pcdiff.train.checkpoint import load_backbone, save_backbone
from pcdiff.train.noise import backbone_outputs, mask_noise

WORDS = ["cat", "dog", "bird", "fish", "cow", "horse", "pig", "goat"]


@pytest.fixture
def words():
    return ItemData(WORDS[:-2], WORDS[-2:], Vocabulary.from_items(WORDS), block_length=6)


def tiny(data, noise="mask", **kwargs):
    torch.manual_seed(0)
    mask_id = data.vocab.mask_id if noise == "mask" else None
    return TinyDiffusionTransformer(data.vocab.size, mask_id, data.block_length, **{"dim": 16, "depth": 1,
                                                                                     "heads": 2, **kwargs}, noise=noise)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- the corruption
def test_masked_corruption_puts_the_mask_id_and_draws_nothing():
    backbone = StubBackbone(contextual(4))
    x0 = torch.randint(0, V, (50, 4), generator=seeded(1))
    masked = torch.rand(50, 4, generator=seeded(2)) < 0.5
    gen = seeded(3)
    state = gen.get_state()
    xt = corrupt(x0, masked, backbone, gen)
    assert torch.equal(xt, torch.where(masked, MASK, x0)) and torch.equal(gen.get_state(), state)


def test_uniform_corruption_draws_uniform_tokens_at_the_chosen_positions_only():
    backbone = StubBackbone(contextual(4), noise="uniform")
    x0 = torch.zeros(4000, 4, dtype=torch.long)
    masked = torch.rand(4000, 4, generator=seeded(2)) < 0.5
    xt = corrupt(x0, masked, backbone, seeded(3))
    assert torch.equal(xt[~masked], x0[~masked]) and ((xt >= 0) & (xt < V)).all()
    counts = torch.bincount(xt[masked], minlength=V).float() / masked.sum()
    assert (counts - 1 / V).abs().max() < 0.03                                  # uniform over [0, V), 0 included
    assert torch.equal(xt, corrupt(x0, masked, backbone, seeded(3)))            # the generator's draw
    fill = noise_fill(backbone, x0.shape, seeded(3))
    assert torch.equal(corrupt(x0, masked, backbone, fill=fill), xt)            # drawn beforehand: the same
    with pytest.raises(ValueError, match="backbone.noise must be one of"):
        noise_fill(StubBackbone(contextual(4), noise="gaussian"), (2, 2))


# ----------------------------------------------------------------------------- the tiny backbone
def test_tiny_uniform_mode_has_no_mask_row_and_reads_tokens_only(words):
    model = tiny(words, noise="uniform")
    assert model.noise == "uniform" and model.mask_id is None
    assert model.token_embedding.num_embeddings == words.vocab.size
    assert model.num_parameters() == TinyDiffusionTransformer.parameter_values(model.config)
    assert model(words.encode_train()).logits.shape == (6, 6, words.vocab.size)
    with pytest.raises(ValueError, match=r"is not in \[0, \d+\)$|bad ids in all"):
        model(torch.full((1, 6), words.vocab.size))                             # no mask id to read
    with pytest.raises(ValueError, match="mask_id must be None with noise='uniform'"):
        TinyDiffusionTransformer(5, 5, 4, noise="uniform")
    with pytest.raises(ValueError, match="noise must be one of"):
        TinyDiffusionTransformer(5, 5, 4, noise="gaussian")
    with pytest.raises(ValueError, match="mask_id"):
        TinyDiffusionTransformer(5, None, 4)                                     # a masked model needs its mask id
    with pytest.raises(ValueError, match="start symbol"):
        TinyCausalTransformer(5, None, 4, noise="uniform")
    assert "noise" not in tiny(words).config                                     # masked checkpoints as before


def test_checkpoints_keep_the_noise_kind(words, tmp_path):
    for noise in ("mask", "uniform"):
        model = tiny(words, noise=noise)
        again = load_backbone(save_backbone(model, tmp_path / noise))
        assert (again.noise, again.mask_id) == (model.noise, model.mask_id)
        x = words.encode_train()
        torch.testing.assert_close(again(x).logits, model(x).logits)


# ----------------------------------------------------------------------------- training
def test_uniform_backbone_trains_on_the_same_objective(words):
    model = tiny(words, noise="uniform", dim=32)
    x0 = words.encode_train().repeat(8, 1)
    before = heldout_loss(model, x0)
    train_backbone(model, words, steps=40, batch_size=32, lr=1e-2, progress=False, eval_every=40)
    assert heldout_loss(model, x0) < 0.6 * before


@pytest.mark.parametrize("cached", [True, False])
def test_a_layer_trains_on_a_frozen_uniform_backbone(words, cached):
    backbone = tiny(words, noise="uniform").eval().requires_grad_(False)
    layer = CoDDLayer.from_structure("hmm", 6, words.vocab.size, num_states=4, mask_id=None)
    before = [p.detach().clone() for p in layer.parameters()]
    result = train_codd_layer(layer, backbone, words, steps=3, batch_size=8, progress=False, eval_every=3,
                              cache_backbone=cached)
    assert result["steps"] == 3 and all(torch.isfinite(torch.tensor(v)) for v in result["heldout"].values())
    assert any(not torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    with pytest.raises(ValueError, match="mask_id"):                            # a masked layer on it
        train_codd_layer(CoDDLayer.from_structure("hmm", 6, words.vocab.size, num_states=2,
                                                  mask_id=words.vocab.mask_id), backbone, words, steps=1)


def test_the_layer_objective_is_exact_on_uniformly_corrupted_inputs(words):
    """−log p̂(x0 at the corrupted positions | x_t) from the layer equals the brute-force sum over every
    completion of those positions (the noise tokens there are never read)."""
    backbone = tiny(words, noise="uniform").eval()
    layer = CoDDLayer.from_structure("hmm", 6, words.vocab.size, num_states=3, dtype=torch.float64)
    x0 = words.encode_train()[:2]
    _, masked = mask_noise(x0, seeded(0))
    masked[:, 2:] = False                                                        # at most 2 positions: enumerable
    masked[:, 0] = True
    logits, hidden = backbone_outputs(backbone, x0, masked, generator=seeded(1))
    nll = layer.nll(logits.double(), hidden.double(), x0, masked)
    v = words.vocab.size
    for b in range(2):
        free = masked[b].nonzero().flatten()
        grid = torch.cartesian_prod(*[torch.arange(v)] * len(free)).reshape(-1, len(free))
        rows = x0[b].repeat(len(grid), 1)
        rows[:, free] = grid
        logq = torch.log_softmax(logits[b].double(), -1)[free]                   # [F, V]
        scores = layer.circuit.log_prob(rows) + logq[torch.arange(len(free)), grid].sum(-1)   # [V^F]
        expected = torch.logsumexp(scores, 0) - scores[(rows == x0[b]).all(-1)][0]
        torch.testing.assert_close(nll[b], expected.detach())


# ----------------------------------------------------------------------------- decoding
def recorded_steps(monkeypatch):
    """Every step's (positions to decide, committed positions, tokens out), by patching BlockDecoder.step."""
    seen, step = [], BlockDecoder.step

    def recording(self, logits, hidden, tokens, masked, count, context=None, return_committed=False):
        out, committed = step(self, logits, hidden, tokens, masked, count, context, return_committed=True)
        seen.append((masked.clone(), committed.clone(), out.clone()))
        return (out, committed) if return_committed else out
    monkeypatch.setattr(BlockDecoder, "step", recording)
    return seen


@pytest.mark.parametrize("codd", ["off", "joint", "any_order"])
def test_uniform_decoding_renoises_what_is_undecided_and_clamps_what_is_committed(codd, monkeypatch):
    seen = recorded_steps(monkeypatch)
    backbone = StubBackbone(contextual(3 + 8), noise="uniform")
    layer = CoDDLayer(structures.hmm(4, 3, V, seed=0), dtype=torch.float64) if codd != "off" else None
    prompt = torch.randint(0, V, (300, 3), generator=seeded(5))
    out = generate(backbone, prompt, layer=layer, gen_length=8, block_length=4, steps=6, codd=codd,
                   generator=seeded(1))
    assert torch.equal(out[:, :3], prompt) and ((out >= 0) & (out < V)).all()
    assert len(backbone.calls) == 6 and all(torch.equal(c[:, :3], prompt) for c in backbone.calls)
    expected = [2, 1, 1, 2, 1, 1]                                     # 4 positions over 3 steps, per block
    undecided = torch.ones(300, 8, dtype=torch.bool)
    for k, (masked, committed, block_out) in enumerate(seen):
        lo = 4 * (k // 3)
        assert torch.equal(masked, undecided[:, lo:lo + 4]) and (committed.sum(-1) == expected[k]).all()
        assert not (committed & ~masked).any()
        undecided[:, lo:lo + 4] &= ~committed
        decided = ~undecided
        later = [c[:, 3:] for c in backbone.calls[k + 1:]] + [out[:, 3:]]
        assert all(torch.equal(c[decided], out[:, 3:][decided]) for c in later)   # committed: clamped from then on
    assert not undecided.any()
    # undecided positions get fresh uniform noise before every call (the model's own corruption)
    first, second = backbone.calls[0][:, 7:], backbone.calls[1][:, 7:]        # the second block: still undecided
    changed = (first != second).float().mean()
    assert 0.7 < changed < 0.9                                                  # 1 − 1/V = 0.8 for fresh draws
    assert (torch.bincount(first.flatten(), minlength=V).float() / first.numel() - 1 / V).abs().max() < 0.05


def test_uniform_decoding_needs_the_positions_to_decide_and_checks_them():
    backbone = StubBackbone(contextual(8), noise="uniform")
    x = torch.randint(0, V, (2, 8), generator=seeded(0))
    with pytest.raises(ValueError, match="pass to_decide"):
        denoise(backbone, x, block_length=4, steps=2)
    with pytest.raises(ValueError, match="to_decide must be a bool tensor"):
        denoise(backbone, x, to_decide=torch.ones(2, 7, dtype=torch.bool), block_length=4, steps=2)
    with pytest.raises(ValueError, match="before start=4"):
        denoise(backbone, x, to_decide=torch.ones(2, 8, dtype=torch.bool), start=4, block_length=4, steps=1)
    to_decide = torch.zeros(2, 8, dtype=torch.bool)
    to_decide[:, [1, 2, 6]] = True
    out = denoise(backbone, x, to_decide=to_decide, block_length=4, steps=3, generator=seeded(1), remask=0.5)
    assert torch.equal(out[~to_decide], x[~to_decide]) and len(backbone.calls) == 3
    assert torch.equal(backbone.calls[0][~to_decide], x[~to_decide])


def test_masked_decoding_with_explicit_positions_is_the_default():
    x = torch.randint(0, V, (3, 8), generator=seeded(0))
    x[:, [1, 2, 5, 6, 7]] = MASK
    kwargs = dict(block_length=4, steps=4, remask=0.3, generator=None)
    a = denoise(StubBackbone(contextual(8)), x, **{**kwargs, "generator": seeded(2)})
    b = denoise(StubBackbone(contextual(8)), x, to_decide=x == MASK, **{**kwargs, "generator": seeded(2)})
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="holds the mask id 7 at a position after start"):
        denoise(StubBackbone(contextual(8)), x, to_decide=torch.zeros(3, 8, dtype=torch.bool), block_length=4, steps=2)


def test_tiny_uniform_backbone_generates_with_the_layer_and_the_ar_product(words):
    backbone = tiny(words, noise="uniform").eval()
    layer = CoDDLayer.from_structure("hmm", 6, words.vocab.size, num_states=3)
    for codd in ("off", "joint", "any_order"):
        out = generate(backbone, None, layer=layer, gen_length=6, block_length=6, steps=3, codd=codd, batch_size=4,
                       generator=seeded(0))
        assert out.shape == (4, 6) and ((out >= 0) & (out < words.vocab.size)).all()
    ar = TinyCausalTransformer(words.vocab.size, words.vocab.mask_id, 6, dim=16, depth=1, heads=2).eval()
    out = generate(backbone, None, gen_length=6, block_length=6, steps=3, codd="ar_product", ar_model=ar,
                   batch_size=4, generator=seeded(0))
    assert out.shape == (4, 6)
    with pytest.raises(ValueError, match="mask id"):
        generate(backbone, None, layer=CoDDLayer.from_structure("hmm", 6, words.vocab.size, num_states=2,
                                                               mask_id=words.vocab.mask_id),
                 gen_length=6, block_length=6, steps=1, codd="joint")


# ----------------------------------------------------------------------------- the command line
def test_a_uniform_run_trains_saves_and_serves_sample_and_infill(tmp_path, capsys):
    from pcdiff.app.cli import main
    from pcdiff.app.parser import build_parser
    from pcdiff.app.demo import prepare_run, train_prepared
    from pcdiff.app.runs import load_run, save_run
    data = tmp_path / "words.txt"
    data.write_text("\n".join(["cat", "dog", "bird", "fish", "cow", "owl", "bee", "ant", "eel", "yak"] * 3) + "\n")
    args = build_parser().parse_args(["train", "--data", str(data), "--noise", "uniform"])
    assert args.noise == "uniform"
    # what `pcdiff train --noise uniform` runs, with a smaller backbone
    run = prepare_run(None, str(data), 6, num_states=4, noise=args.noise, backbone_dim=16, backbone_depth=1)
    save_run(train_prepared(run, backbone_steps=4, layer_steps=2, progress=False), tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert (run.backbone.noise, run.backbone.mask_id, run.layer.mask_id) == ("uniform", None, None)
    assert run.settings["noise"] == "uniform"
    assert main(["sample", str(tmp_path / "run"), "--num", "3", "--steps", "2"]) == 0
    items = tmp_path / "items.txt"
    items.write_text("c?t\nco?\n")
    assert main(["infill", str(tmp_path / "run"), "--input", str(items), "--num", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()[-4:]          # a completion may end early (an end symbol)
    assert all(a.startswith("c") for a in lines[:2]) and all(b.startswith("co") for b in lines[2:])
    with pytest.raises(SystemExit):                                             # argparse refuses it
        main(["demo", "--noise", "gaussian"])


def test_prepare_run_refuses_an_unknown_noise():
    from pcdiff.app.demo import prepare_run
    with pytest.raises(ValueError, match="noise must be one of"):
        prepare_run(noise="gaussian")
