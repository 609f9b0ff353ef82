"""CoDDLayer (blocks, NLL, construction), checkpoints, and training: resumable, and better than the
factorized backbone on real words."""
import numpy as np
import pytest
import torch

import structures
from pcdiff.backbones import TinyDiffusionTransformer
from pcdiff.train.checkpoint import CheckpointError, load_layer, load_layer_state, save_layer
from pcdiff.data import ItemData, Vocabulary, load_words
from pcdiff.codd import CoDDLayer
from pcdiff.train import LayerTrainingConfig, evaluate_nll, train_backbone, train_codd_layer

WORDS = ["cat", "dog", "bird", "fish", "cow", "horse", "pig", "goat"]


@pytest.fixture
def words():
    return ItemData(WORDS[:-2], WORDS[-2:], Vocabulary.from_items(WORDS), block_length=6)


def tiny_backbone(data, seed=0):
    torch.manual_seed(seed)
    return TinyDiffusionTransformer(data.vocab.size, data.vocab.mask_id, data.block_length, dim=16, depth=1, heads=2)


def block_inputs(batch, length, vocab, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, length, vocab, generator=g), torch.randn(batch, length, dim, generator=g),
            torch.randint(0, vocab, (batch, length), generator=g), torch.rand(batch, length, generator=g) < 0.5)


# ----------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("structure, data", [("hmm", None), ("chain", None), ("tree", None), ("tree", "data")])
@pytest.mark.parametrize("adapter", ["static", "latent_evidence", "low_rank", "coupling", "backbone_weight"])
def test_from_structure_gives_a_working_layer(structure, data, adapter):
    if data is not None:
        rng = np.random.default_rng(0)
        data = np.repeat(rng.integers(0, 5, (200, 1)), 5, 1)                # five copies of one column
    layer = CoDDLayer.from_structure(structure, 5, 5, num_states=3, adapter=adapter, backbone_hidden_size=4,
                                     data=data, dtype=torch.float64)
    assert layer.block_length == 5 and layer.vocab_size == 5
    logits, hidden, tokens, masked = block_inputs(2, 5, 5)
    dist = layer.distribution(logits.double(), hidden.double(), tokens, masked)
    assert torch.isfinite(dist.log_normalizer).all()
    if structure == "tree":
        assert len(layer.recipe["tree_edges"]) == 4


def test_any_compiled_circuit_or_circuit_makes_a_layer():
    circuit = structures.mixture(structures.hmm(4, 2, 3), structures.hidden_chain(4, 2, 3))
    for layer in (CoDDLayer(circuit), CoDDLayer(structures.compile(circuit), adapter="low_rank", hidden_size=4)):
        assert layer.block_length == 4 and layer.recipe is None
    with pytest.raises(TypeError, match="structures.Circuit or CompiledCircuit"):
        CoDDLayer("hmm")
    with pytest.raises(ValueError, match="structure must be one of"):
        CoDDLayer.from_structure("grid", 4, 3)
    with pytest.raises(ValueError, match=r"data must be a non-empty \[N, 4\]"):
        CoDDLayer.from_structure("tree", 4, 3, data=np.zeros((3, 5), dtype=int))


def test_blocks_split_a_sequence_and_nll_sums_them():
    layer = CoDDLayer.from_structure("hmm", 3, 4, num_states=2, adapter="latent_evidence", backbone_hidden_size=4,
                                     dtype=torch.float64)
    logits, hidden, x0, masked = block_inputs(2, 6, 4)
    logits, hidden = logits.double(), hidden.double()
    blocks = layer.blocks(logits, hidden, x0, masked)
    assert len(blocks) == 2 and all(d.event_shape == (3,) for d in blocks)
    expected = -(blocks[0].log_prob(x0[:, :3]) + blocks[1].log_prob(x0[:, 3:]))
    torch.testing.assert_close(layer.nll(logits, hidden, x0, masked), expected)
    torch.testing.assert_close(blocks[1].marginals(), layer.distribution(logits[:, 3:], hidden[:, 3:], x0[:, 3:],
                                                                         masked[:, 3:]).marginals())
    with pytest.raises(ValueError, match="not a positive multiple of the circuit's block length 3"):
        layer.blocks(logits[:, :5], hidden[:, :5], x0[:, :5], masked[:, :5])
    with pytest.raises(ValueError, match="hidden is None"):
        layer.distribution(logits[:, :3], None, x0[:, :3], masked[:, :3])
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        layer.distribution(torch.randn(2, 3, 5, dtype=torch.float64), hidden[:, :3], x0[:, :3], masked[:, :3])
    with pytest.raises(ValueError, match="block length is 3"):
        layer.distribution(logits[:, :4], hidden[:, :4], x0[:, :4], masked[:, :4])


# ----------------------------------------------------------------------------- checkpoints
def test_layer_checkpoint_round_trip_and_errors(tmp_path):
    layer = CoDDLayer.from_structure("tree", 4, 3, num_states=2, adapter="low_rank", backbone_hidden_size=4, seed=1)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p))
    path = save_layer(layer, tmp_path / "layer")
    again = load_layer(path)
    logits, hidden, tokens, masked = block_inputs(3, 4, 3)
    value = layer.distribution(logits, hidden, tokens, masked).sample()
    torch.testing.assert_close(again.distribution(logits, hidden, tokens, masked).log_prob(value),
                               layer.distribution(logits, hidden, tokens, masked).log_prob(value))

    other = CoDDLayer.from_structure("tree", 4, 3, num_states=5, adapter="low_rank", backbone_hidden_size=4)
    with pytest.raises(CheckpointError, match="does not match the checkpoint"):
        load_layer_state(other, path)
    with pytest.raises(CheckpointError, match="adapter"):
        load_layer_state(CoDDLayer.from_structure("tree", 4, 3, num_states=2), path)
    with pytest.raises(CheckpointError, match="not found"):
        load_layer(tmp_path / "missing")

    weights = tmp_path / "layer.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_layer(path)
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_layer(path)


# ----------------------------------------------------------------------------- training
def _run(data, tmp_path, steps, resume=False, adapter="low_rank", **kw):
    backbone = tiny_backbone(data)
    layer = CoDDLayer.from_structure("hmm", 6, data.vocab.size, num_states=4, adapter=adapter, backbone_hidden_size=16,
                                     mask_id=data.vocab.mask_id)
    result = train_codd_layer(layer, backbone, data, steps=steps, batch_size=8, progress=False, eval_every=2,
                              checkpoint_dir=tmp_path, resume=resume, **kw)
    return layer, backbone, result


@pytest.mark.parametrize("settings", [dict(), dict(cache_backbone=False), dict(freeze_backbone=False),
                                      dict(elbo_draw="count"), dict(elbo_draw="count", cache_backbone=False)])
def test_resuming_continues_the_same_run(words, tmp_path, settings):
    straight, straight_bb, result = _run(words, tmp_path / "a", 6, **settings)
    _run(words, tmp_path / "b", 3, **settings)
    resumed, resumed_bb, again = _run(words, tmp_path / "b", 6, resume=True, **settings)
    assert again["steps"] == 6 and [h["steps"] for h in again["history"]] == [2, 3, 4, 6]
    for a, b in zip(list(straight.parameters()) + list(straight_bb.parameters()),
                    list(resumed.parameters()) + list(resumed_bb.parameters())):
        assert torch.equal(a, b)
    assert result["heldout"] == again["heldout"]
    assert len(list((tmp_path / "b").glob("step-*.json"))) == 2               # older checkpoints pruned
    changed = not torch.equal(next(straight_bb.parameters()), next(tiny_backbone(words).parameters()))
    assert changed == (settings.get("freeze_backbone") is False)


def test_resume_refuses_other_settings_and_mismatches(words, tmp_path):
    _run(words, tmp_path, 2)
    layer = CoDDLayer.from_structure("hmm", 6, words.vocab.size, num_states=4, adapter="low_rank",
                                     backbone_hidden_size=16)
    with pytest.raises(CheckpointError, match="settings differ.*batch_size"):
        train_codd_layer(layer, tiny_backbone(words), words, steps=4, batch_size=9, progress=False,
                         checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="adapter"):
        _run(words, tmp_path, 4, resume=True, adapter="latent_evidence")
    with pytest.raises(CheckpointError, match="settings differ.*elbo_draw"):
        _run(words, tmp_path, 4, resume=True, elbo_draw="count")


def test_training_checks_its_arguments(words):
    backbone = tiny_backbone(words)
    layer = CoDDLayer.from_structure("hmm", 6, words.vocab.size + 1, num_states=2)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        train_codd_layer(layer, backbone, words, steps=1, progress=False)
    layer = CoDDLayer.from_structure("hmm", 4, words.vocab.size, num_states=2)
    with pytest.raises(ValueError, match="not a multiple of the layer's block length 4"):
        train_codd_layer(layer, backbone, words, steps=1, progress=False)
    layer = CoDDLayer.from_structure("hmm", 3, words.vocab.size, num_states=2)
    with pytest.raises(TypeError, match="steps"):
        train_codd_layer(layer, backbone, words, progress=False)
    with pytest.raises(TypeError, match=r"unknown LayerTrainingConfig setting\(s\) \['seconds'\]"):
        train_codd_layer(layer, backbone, words, steps=1, seconds=3.0)
    for bad in (dict(steps=-1), dict(steps=1, batch_size=0), dict(steps=1, lr=float("inf")),
                dict(steps=1, cache_maskings=0), dict(steps=1, resume=True)):
        with pytest.raises(ValueError):
            train_codd_layer(layer, backbone, words, **bad)
    with pytest.raises(ValueError, match="not both"):
        train_codd_layer(layer, backbone, words, LayerTrainingConfig(steps=1), steps=2)
    with pytest.raises(ValueError, match="masked_fraction"):
        evaluate_nll(layer, backbone, words.encode_heldout(), 0.0)
    result = train_codd_layer(layer, backbone, words, steps=2, batch_size=4, progress=False)   # two blocks of 3
    assert result["steps"] == 2 and np.isfinite(result["heldout"]["codd"])


def test_a_cache_too_large_for_the_machine_is_refused_before_allocating(words, monkeypatch):
    from pcdiff.train import cache
    backbone = tiny_backbone(words)
    layer = CoDDLayer.from_structure("hmm", 3, words.vocab.size, num_states=2)
    monkeypatch.setattr(cache, "physical_memory", lambda: 10_000)            # bytes: far less than the cache
    with pytest.raises(ValueError, match=r"more than half of this machine's .*lower cache_maskings"):
        train_codd_layer(layer, backbone, words, steps=1, cache_maskings=64, progress=False)
    train_codd_layer(layer, backbone, words, steps=1, cache_backbone=False, progress=False)   # no cache: trains
    monkeypatch.setattr(cache, "physical_memory", lambda: None)              # the OS does not tell: no check
    train_codd_layer(layer, backbone, words, steps=1, cache_maskings=64, progress=False)


def test_the_cache_computes_only_the_entries_the_run_reads(words, monkeypatch):
    """3 steps of 8 read at most 24 of the 6 items x 64 maskings: the cache's backbone runs on those
    alone, and the layer trains to the same bits as with every touched chunk computed."""
    from pcdiff.train import cache, layer as layer_training
    computed = []

    def counting(backbone, x0, masked, **kw):
        computed.append(len(x0))
        return backbone_outputs(backbone, x0, masked, **kw)
    backbone_outputs = cache.backbone_outputs
    monkeypatch.setattr(cache, "backbone_outputs", counting)

    def train(schedule):
        if not schedule:
            monkeypatch.setattr(layer_training, "_entries_read", lambda *args: None)
        layer = CoDDLayer.from_structure("hmm", 6, words.vocab.size, num_states=4, mask_id=words.vocab.mask_id)
        train_codd_layer(layer, tiny_backbone(words), words, steps=3, batch_size=8, cache_maskings=64,
                         progress=False, eval_every=None)
        rows, computed[:] = sum(computed), []
        return layer, rows
    scheduled, rows_read = train(True)
    every, rows_touched = train(False)
    assert rows_read <= 24 < rows_touched
    for a, b in zip(scheduled.parameters(), every.parameters()):
        assert torch.equal(a, b)


def test_the_cache_stores_only_the_entries_it_is_told_will_be_read(words):
    from pcdiff.train.cache import BackboneCache
    from pcdiff.train.distributed import world
    train = words.encode_train()
    read = torch.zeros(len(train) * 4, dtype=torch.bool)
    read[[1, 5, 6, 22]] = True
    cache = BackboneCache(tiny_backbone(words), train, 4, False, torch.Generator().manual_seed(0), torch.float32,
                          world(), read=read)
    assert cache.logits.shape[0] == 4
    t, masked, logits, _ = cache.get(torch.tensor([22, 5, 22]), "cpu")
    assert torch.equal(logits[0], logits[2]) and logits.shape[0] == 3
    with pytest.raises(ValueError, match="never read"):
        cache.get(torch.tensor([2]), "cpu")
    with pytest.raises(ValueError, match="one flag per entry"):
        BackboneCache(tiny_backbone(words), train, 4, False, torch.Generator(), torch.float32, world(), read=read[:5])


def test_em_warm_start_fits_the_circuit_alone_before_training(words):
    """em_init_epochs: the circuit alone gets likelier on the training rows before any gradient step;
    the same seed gives the same circuit; 0 leaves it as built."""
    backbone = tiny_backbone(words)
    train = words.encode_train()
    fitted = []
    for epochs in (0, 3, 3):
        layer = CoDDLayer.from_structure("hmm", 6, words.vocab.size, num_states=3, seed=0, mask_id=words.vocab.mask_id)
        built = layer.circuit.log_prob(train).mean().item()
        train_codd_layer(layer, backbone, words, steps=0, em_init_epochs=epochs, eval_every=None, eval_items=0,
                         progress=False)
        fitted.append(layer.circuit.log_prob(train).mean().item())
        if epochs == 0:
            assert fitted[-1] == built
    assert fitted[1] > fitted[0] + 0.1 and fitted[1] == fitted[2]
    with pytest.raises(ValueError, match="em_init_epochs"):
        LayerTrainingConfig(steps=1, em_init_epochs=-1)


def test_a_trained_layer_beats_the_factorized_backbone_on_words():
    """Char-level English words (wordfreq): a small backbone trained briefly, then a static HMM
    layer trained on the CoDD objective with the backbone frozen, lowers held-out NLL."""
    data = load_words(num_words=3000, max_length=8, heldout_fraction=0.2, seed=0)
    torch.manual_seed(0)
    backbone = TinyDiffusionTransformer(data.vocab.size, data.vocab.mask_id, data.block_length, dim=64, depth=2)
    train_backbone(backbone, data, steps=300, batch_size=128, lr=3e-3, progress=False, eval_every=None)
    layer = CoDDLayer.from_structure("hmm", data.block_length, data.vocab.size, num_states=64,
                                     mask_id=data.vocab.mask_id)
    heldout = data.encode_heldout()
    before = evaluate_nll(layer, backbone, heldout, 0.5)
    assert before["codd"] > before["factorized"] - 0.05                      # an untrained circuit does not help
    train_codd_layer(layer, backbone, data, steps=400, batch_size=128, lr=0.03, progress=False, eval_every=None)
    after = {f: evaluate_nll(layer, backbone, heldout, f) for f in (0.5, 0.75)}
    assert after[0.5]["factorized"] == pytest.approx(before["factorized"])   # the backbone stayed frozen
    for result in after.values():
        assert result["codd"] < result["factorized"] - 0.03, result
