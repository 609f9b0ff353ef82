"""Backbones: the contract, the tiny transformer, masked diffusion training, the HF wrapper."""
import subprocess
import sys

import pytest
import torch

from pcdiff.backbones import BackboneOutput, HFBackbone, TinyDiffusionTransformer, load_hf_backbone
from pcdiff.data import ItemData, Vocabulary
from pcdiff.train import heldout_loss, mask_noise, masked_diffusion_loss, train_backbone

WORDS = ["cat", "dog", "bird", "fish", "cow", "horse"]


@pytest.fixture
def words():
    return ItemData(WORDS, ["pig"], Vocabulary.from_items(WORDS + ["pig"]), block_length=6)


def tiny(data, **kwargs):
    torch.manual_seed(0)
    kwargs = {"dim": 32, "depth": 2, "heads": 2, **kwargs}
    return TinyDiffusionTransformer(data.vocab.size, data.vocab.mask_id, data.block_length, **kwargs)


# ----- tiny transformer and the input contract -----

def test_tiny_shapes_and_mask_is_readable_not_predictable(words):
    model = tiny(words)
    x = words.encode_train().clone()  # [6, 6]
    x[:, ::2] = model.mask_id
    out = model(x)
    assert isinstance(out, BackboneOutput)
    assert out.logits.shape == (6, 6, words.vocab.size)  # no column for the mask
    assert out.hidden.shape == (6, 6, model.hidden_size) and model.hidden_size == 32
    assert torch.isfinite(out.logits).all()
    assert model(x[:, :4]).logits.shape == (6, 4, words.vocab.size)  # shorter blocks are fine


def test_default_config_size():
    model = TinyDiffusionTransformer(vocab_size=27, mask_id=27, block_length=13)
    assert 500_000 <= model.num_parameters() <= 850_000
    assert model.config["dim"] == 128 and model.config["depth"] == 4


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.zeros(6, dtype=torch.long), "2-D"),
        (torch.zeros(2, 6), "torch.long"),
        (torch.zeros(2, 0, dtype=torch.long), "non-empty"),
        (torch.tensor([[0, 1, 2], [3, 4, 99]]), r"tokens\[1, 2\] = 99"),
        (torch.tensor([[0, -1, 2]]), r"tokens\[0, 1\] = -1"),
        (torch.zeros(1, 7, dtype=torch.long), "block_length 6"),
    ],
)
def test_backbone_rejects_bad_tokens(words, tokens, message):
    with pytest.raises(ValueError, match=message):
        tiny(words)(tokens)


def test_tiny_rejects_bad_config():
    with pytest.raises(ValueError, match="divisible by heads"):
        TinyDiffusionTransformer(5, 5, 4, dim=30, heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        TinyDiffusionTransformer(0, 5, 4)


# ----- masked diffusion loss and training -----

def test_mask_noise_masks_at_least_one_position_per_row():
    x0 = torch.zeros(512, 3, dtype=torch.long)
    t, mask = mask_noise(x0, torch.Generator().manual_seed(0))
    assert mask.any(dim=1).all()
    assert t.min() >= 1e-3 and t.max() <= 1.0
    assert 0.35 < mask.float().mean() < 0.65  # about E[t] = 1/2, a bit more from forced positions


def test_loss_is_finite_and_rejects_masked_targets(words):
    model = tiny(words)
    loss = masked_diffusion_loss(model, words.encode_train(), torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    with pytest.raises(ValueError, match="clean tokens"):
        masked_diffusion_loss(model, torch.full((2, 6), model.mask_id), torch.Generator())


def test_training_overfits_a_handful_of_words(words):
    model = tiny(words)
    x0 = words.encode_train()
    before = heldout_loss(model, x0.repeat(8, 1))
    result = train_backbone(model, words, steps=60, batch_size=32, lr=1e-2, progress=False, eval_every=20)
    after = heldout_loss(model, x0.repeat(8, 1))
    assert after < 0.5 * before
    assert result["steps"] == 60 and not model.training
    assert [h["steps"] for h in result["history"]] == [20, 40, 60]
    assert result["heldout_loss"] == result["history"][-1]["heldout_loss"] is not None


def test_training_is_deterministic_for_a_seed(words):
    def run(seed):
        model = tiny(words, dropout=0.1)
        result = train_backbone(model, words, steps=5, batch_size=8, seed=seed, progress=False)
        return model.state_dict(), result["train_loss"]

    (state_a, loss_a), (state_b, loss_b), (state_c, _) = run(0), run(0), run(1)
    assert loss_a == loss_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)


def test_training_leaves_the_global_rng_alone(words):
    model = tiny(words, dropout=0.1)
    state = torch.get_rng_state()
    train_backbone(model, words, steps=2, batch_size=4, progress=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_training_runs_for_steps_never_seconds_and_checks_arguments(words):
    model = tiny(words)
    result = train_backbone(model, words, steps=3, batch_size=8, progress=False)
    assert result["steps"] == 3 and [h["steps"] for h in result["history"]] == [3]
    with pytest.raises(TypeError, match=r"unknown BackboneTrainingConfig setting\(s\) \['seconds'\]"):
        train_backbone(model, words, steps=3, seconds=0.5)
    with pytest.raises(TypeError, match="steps"):
        train_backbone(model, words)
    for bad in (0, 2.5, float("nan"), True):
        with pytest.raises(ValueError, match="steps must be an int >= 1"):
            train_backbone(model, words, steps=bad)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        train_backbone(model, words, steps=1, lr=float("nan"))
    other = ItemData(["xyz"], [], Vocabulary.from_items("xyz"), 6)
    with pytest.raises(ValueError, match="does not match"):
        train_backbone(model, other, steps=1)


def test_importing_pcdiff_does_not_import_transformers():
    code = "import sys, pcdiff.backbones, pcdiff.data; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----- Hugging Face wrapper (tiny random local models, never the hub) -----

@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert(transformers):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64)
    return transformers.BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def llama(transformers):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=2, intermediate_size=64)
    return transformers.LlamaForCausalLM(config).eval()


def test_hf_wrapper_shapes_and_hidden(bert):
    backbone = HFBackbone(bert, mask_id=3)
    assert backbone.vocab_size == 30 and backbone.hidden_size == 32
    tokens = torch.tensor([[5, 3, 7, 3], [1, 2, 3, 4]])
    with torch.no_grad():
        out = backbone(tokens)
        raw = bert(input_ids=tokens, output_hidden_states=True)
    assert out.logits.shape == (2, 4, 30) and out.hidden.shape == (2, 4, 32)
    assert out.logits.dtype == torch.float32
    assert torch.equal(out.logits, raw.logits) and torch.equal(out.hidden, raw.hidden_states[-1])
    with pytest.raises(ValueError, match="= 30"):
        backbone(torch.tensor([[30, 1]]))
    with pytest.raises(ValueError, match="mask_id"):
        HFBackbone(bert, mask_id=30)  # the model cannot embed it


def test_hf_dream_shift_moves_logits_right_by_one(llama):
    plain, shifted = HFBackbone(llama, mask_id=39), HFBackbone(llama, mask_id=39, shift_logits=True)
    tokens = torch.tensor([[1, 39, 39, 7, 39], [4, 5, 39, 39, 2]])
    with torch.no_grad():
        a, b = plain(tokens), shifted(tokens)
    assert torch.equal(b.logits[:, 0], a.logits[:, 0])
    assert torch.equal(b.logits[:, 1:], a.logits[:, :-1])
    assert torch.equal(b.hidden[:, 1:], a.hidden[:, :-1])  # features stay with their logits
    assert not torch.equal(b.logits, a.logits)


def test_load_hf_backbone_from_a_local_directory(bert, llama, tmp_path):
    bert.save_pretrained(tmp_path / "bert")
    llama.save_pretrained(tmp_path / "llama")
    loaded = load_hf_backbone(str(tmp_path / "bert"), mask_id=3)
    assert type(loaded.model).__name__ == "BertForMaskedLM" and not loaded.model.training
    tokens = torch.tensor([[5, 3, 7]])
    with torch.no_grad():
        assert torch.allclose(loaded(tokens).logits, bert(input_ids=tokens).logits)
    causal = load_hf_backbone(str(tmp_path / "llama"), mask_id=39, shift_logits=True)
    assert type(causal.model).__name__ == "LlamaForCausalLM" and causal.shift_logits
    with pytest.raises(ValueError, match="pass mask_id"):
        load_hf_backbone(str(tmp_path / "bert"))  # no mask_token_id in the config, no tokenizer


def test_a_bert_style_mlm_decodes_as_a_masked_diffusion_model_with_the_layer(bert):
    """docs/backbones.md's BERT recipe: an MLM is a masked backbone; the loop and the layer need nothing else."""
    from pcdiff.codd import CoDDLayer
    from pcdiff.decode import generate
    backbone = HFBackbone(bert, mask_id=3)
    layer = CoDDLayer.from_structure("hmm", 4, 30, num_states=4, mask_id=3, adapter="low_rank",
                                     backbone_hidden_size=32)
    prompt = torch.tensor([[5, 6], [7, 8]])
    for codd, steps in (("off", 2), ("joint", 2), ("joint", 4)):
        out = generate(backbone, prompt, layer=layer, gen_length=4, block_length=4, steps=steps, codd=codd,
                       generator=torch.Generator().manual_seed(0))
        assert torch.equal(out[:, :2], prompt) and ((out >= 0) & (out < 30) & (out != 3)).all()
