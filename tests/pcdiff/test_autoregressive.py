"""The autoregressive model of the AR-product decoder: causal by construction, trained by the shared
loop on the diffusion backbone's data (loss falls, same seed same model), bad settings refused by
name, and used end to end by ``generate(codd="ar_product")``."""
import pytest
import torch

from pcdiff.backbones import TinyCausalTransformer, TinyDiffusionTransformer
from pcdiff.data import ItemData, Vocabulary
from pcdiff.decode import generate
from pcdiff.train import AutoregressiveTrainingConfig, next_token_loss, train_autoregressive

WORDS = ["cat", "dog", "bird", "fish", "cow", "horse"]


@pytest.fixture
def words():
    return ItemData(WORDS, ["pig"], Vocabulary.from_items(WORDS + ["pig"]), block_length=6)


def causal(data, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs = {"block_length": data.block_length, "dim": 32, "depth": 2, "heads": 2, **kwargs}
    return TinyCausalTransformer(data.vocab.size, data.vocab.mask_id, **kwargs)


def test_logits_at_a_position_read_only_the_tokens_before_it(words):
    model = causal(words).eval()
    x = words.encode_train()                                              # [6, 6]
    logits = model(x).logits
    assert logits.shape == (6, 6, words.vocab.size)                       # no column for the mask
    for i in range(6):
        changed = x.clone()
        changed[:, i:] = model.mask_id if i % 2 else (x[:, i:] + 1) % words.vocab.size
        again = model(changed).logits
        torch.testing.assert_close(again[:, :i + 1], logits[:, :i + 1])  # position i sees x_<i only
    assert model(x[:, :1]).logits.shape == (6, 1, words.vocab.size)      # the start symbol's prediction


@pytest.mark.parametrize("kwargs, match", [(dict(dim=10, heads=3), "dim"), (dict(depth=0), "depth"),
                                           (dict(dropout=1.0), "dropout"), (dict(block_length=0), "block_length")])
def test_bad_model_settings_are_named(words, kwargs, match):
    args = dict(vocab_size=words.vocab.size, mask_id=words.vocab.mask_id, block_length=6) | kwargs
    with pytest.raises(ValueError, match=match):
        TinyCausalTransformer(**args)


def test_training_lowers_the_loss_and_is_deterministic(words):
    x = words.encode_train()
    model = causal(words)
    with torch.no_grad():
        before = next_token_loss(model, x).item()
    state = torch.random.get_rng_state()
    result = train_autoregressive(model, words, steps=60, batch_size=16, eval_every=30, progress=False, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)              # the global RNG is left alone
    with torch.no_grad():
        after = next_token_loss(model, x).item()
    assert after < 0.6 * before and not model.training
    assert [r["steps"] for r in result["history"]] == [30, 60] and result["heldout_loss"] is not None
    twin = causal(words)
    again = train_autoregressive(twin, words, AutoregressiveTrainingConfig(steps=60, batch_size=16, eval_every=30,
                                                                           progress=False, seed=3))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    assert [r["train_loss"] for r in again["history"]] == [r["train_loss"] for r in result["history"]]


@pytest.mark.parametrize("settings, error, match", [
    (dict(steps=0), ValueError, "steps"), (dict(steps=5, lr=-1.0), ValueError, "lr"),
    (dict(steps=5, seed=-1), ValueError, "seed"), (dict(steps=5, progress="no"), ValueError, "progress"),
    (dict(steps=5, epochs=2), TypeError, "epochs"),
])
def test_bad_training_settings_are_named(words, settings, error, match):
    with pytest.raises(error, match=match):
        train_autoregressive(causal(words), words, **settings)


def test_training_refuses_a_wrong_model_data_or_config(words):
    with pytest.raises(TypeError, match="model must be a TinyCausalTransformer"):
        train_autoregressive(TinyDiffusionTransformer(words.vocab.size, words.vocab.mask_id, 6, dim=16, depth=1,
                                                      heads=2), words, steps=1, progress=False)
    other = ItemData(["xyz"], [], Vocabulary.from_items("xyz"), 6)
    with pytest.raises(ValueError, match="vocabulary"):
        train_autoregressive(causal(words), other, steps=1, progress=False)
    with pytest.raises(ValueError, match="block_length"):
        train_autoregressive(causal(words, block_length=4), words, steps=1, progress=False)
    with pytest.raises(ValueError, match="not both"):
        train_autoregressive(causal(words), words, AutoregressiveTrainingConfig(steps=1), steps=2)
    with pytest.raises(TypeError, match="config must be a AutoregressiveTrainingConfig"):
        train_autoregressive(causal(words), words, object())


def test_a_trained_ar_model_steers_generation(words):
    model = causal(words)
    train_autoregressive(model, words, steps=80, batch_size=16, lr=1e-2, eval_every=None, progress=False)
    torch.manual_seed(0)
    backbone = TinyDiffusionTransformer(words.vocab.size, words.vocab.mask_id, 6, dim=16, depth=1, heads=2).eval()
    out, calls = generate(backbone, None, gen_length=6, block_length=6, steps=3, batch_size=200, codd="ar_product",
                          ar_model=model, ar_weight=1.0, generator=torch.Generator().manual_seed(0),
                          return_calls=True)
    assert calls == (3, 6) and (out < words.vocab.size).all()
    real = sum(words.vocab.decode(row) in set(WORDS) for row in out)     # the untrained backbone alone: ~never
    assert real > 100


def test_a_saved_causal_model_loads_back_causal(words, tmp_path):
    from pcdiff.train.checkpoint import load_backbone, save_backbone
    model = causal(words).eval()
    loaded = load_backbone(save_backbone(model, tmp_path / "ar"))
    assert type(loaded) is TinyCausalTransformer and loaded.causal
    x = words.encode_train()
    assert torch.equal(loaded(x).logits, model(x).logits)
    diffusion = load_backbone(save_backbone(TinyDiffusionTransformer(words.vocab.size, words.vocab.mask_id, 6, dim=16,
                                                                     depth=1, heads=2), tmp_path / "bb"))
    assert type(diffusion) is TinyDiffusionTransformer and not diffusion.causal
