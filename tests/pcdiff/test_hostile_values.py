"""NaN and inf must not become normal-looking output: hidden states, backbone logits on the paths
that bypass the distribution's checks, and the public entry points' arguments (bools for ints,
truthy strings for flags), plus data files with odd encodings or lines."""
import math

import pytest
import torch

from helpers.stubs import MASK, V, StubBackbone, contextual
from pcdiff import BlockDecoder, CoDDLayer, LayerTrainingConfig, generate, load_hf_backbone
from pcdiff.app.scoring import backbone_scores, fixed_masks
from pcdiff.data import load_text_file


def layer_with(adapter: str, length: int = 4) -> CoDDLayer:
    return CoDDLayer.from_structure("hmm", length, V, num_states=3, adapter=adapter, backbone_hidden_size=6,
                                    mask_id=MASK)


def block(batch: int = 2, length: int = 4):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, length, V, generator=g)
    tokens = torch.zeros(batch, length, dtype=torch.long)
    masked = torch.ones(batch, length, dtype=torch.bool)
    return logits, torch.randn(batch, length, 6, generator=g), tokens, masked


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("adapter", ["low_rank", "latent_evidence"])
def test_adapters_refuse_non_finite_hidden_states_by_name(adapter, bad):
    layer = layer_with(adapter)
    logits, hidden, tokens, masked = block()
    hidden[1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"hidden\[1, 2, 3\]"):
        layer.distribution(logits, hidden, tokens, masked)
    with pytest.raises(ValueError, match="hidden"):
        layer.adapter(layer.circuit, hidden)
    hidden[1, 2, 3] = 0.0
    assert torch.isfinite(layer.distribution(logits, hidden, tokens, masked).marginals()).all()


class NaNBackbone(StubBackbone):
    """The stub's logits with a NaN at one position: a broken backbone."""

    def __init__(self, length: int):
        def logits(tokens):
            out = contextual(length)(tokens).clone()
            out[:, -1, 0] = float("nan")
            return out
        super().__init__(logits)


@pytest.mark.parametrize("codd", ["off", "joint", "any_order"])
def test_nan_logits_from_the_backbone_are_named_on_every_decoding_path(codd):
    layer = layer_with("static")
    with pytest.raises(ValueError, match="the backbone's logits.*NaN"):
        generate(NaNBackbone(4), None, layer=layer, gen_length=4, block_length=4, steps=2, codd=codd,
                 batch_size=2)


def test_factorized_decoding_refuses_a_row_with_every_token_banned():
    table = torch.zeros(4, V)
    table[1] = -math.inf
    backbone = StubBackbone(lambda tokens: table[: tokens.shape[1]].expand(tokens.shape[0], -1, -1))
    with pytest.raises(ValueError, match=r"ban every token.*\[0, 1\]"):
        generate(backbone, None, gen_length=4, block_length=4, steps=1)


def test_evaluation_refuses_nan_logits_instead_of_reporting_them():
    x0 = torch.randint(0, V, (3, 4))
    with pytest.raises(ValueError, match="the backbone's logits"):
        backbone_scores(NaNBackbone(4), None, x0, fixed_masks(x0, 2, torch.Generator().manual_seed(0)),
                        {"random": torch.rand(x0.shape)})


def test_a_nan_parameter_is_not_reported_as_probability_zero():
    layer = layer_with("static")
    with torch.no_grad():
        next(layer.circuit.parameters()).view(-1)[0] = float("nan")
    logits, _, tokens, masked = block()
    with pytest.raises(ValueError) as info:
        layer.distribution(logits, None, tokens, masked).log_normalizer
    assert "probability zero" not in str(info.value) and ("NaN" in str(info.value) or "nan" in str(info.value))


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=True), "temperature"),
    (dict(threshold=float("nan")), "threshold"), (dict(codd="joint"), "needs a CoDD layer"),
    (dict(remasking="best"), "remasking"),
])
def test_block_decoder_checks_its_knobs_when_built_directly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlockDecoder(None, mask_id=MASK, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=True), "steps must be"), (dict(gen_length=True, block_length=1), "gen_length must be"),
    (dict(block_length=True, gen_length=1), "block_length must be"), (dict(batch_size=True), "batch_size must be"),
])
def test_generate_refuses_bools_for_counts(kwargs, match):
    args = dict(gen_length=4, block_length=4, steps=2) | kwargs
    with pytest.raises(ValueError, match=match):
        generate(StubBackbone(contextual(4)), None, **args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_states=True), "num_states"), (dict(seed=-1), "seed"), (dict(temperature=True), "temperature"),
    (dict(mask_id=-1), "mask_id"), (dict(adapter="low_rank", backbone_hidden_size=True), "hidden_size"),
    (dict(adapter_kwargs=[("rank", 2)]), "adapter_kwargs"),
])
def test_layer_construction_refuses_what_it_cannot_mean(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        CoDDLayer.from_structure("hmm", 4, V, **({"num_states": 3} | kwargs))


@pytest.mark.parametrize("setting", ["freeze_backbone", "cache_backbone", "resume", "progress"])
def test_training_flags_must_be_real_bools(setting):
    with pytest.raises(ValueError, match=setting):
        LayerTrainingConfig(steps=1, **{setting: "False"})
    with pytest.raises(ValueError, match="checkpoint_dir"):
        LayerTrainingConfig(steps=1, checkpoint_dir=3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(trust_remote_code="False"), "trust_remote_code"), (dict(shift_logits=1), "shift_logits"),
    (dict(mask_id=True), "mask_id"), (dict(mask_id=-1), "mask_id"), (dict(dtype="float99"), "dtype"),
    (dict(device="gpu7"), "device"), (dict(name_or_path=""), "name_or_path"),
])
def test_load_hf_backbone_checks_arguments_before_importing_anything(kwargs, match):
    args = dict(name_or_path="some/model") | kwargs
    with pytest.raises(ValueError, match=match):
        load_hf_backbone(args.pop("name_or_path"), **args)


def test_text_files_with_a_bom_utf16_latin1_or_a_huge_line(tmp_path):
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffcat\ndog\n".encode("utf-8"))
    data = load_text_file(bom)
    assert "\ufeff" not in "".join(data.vocab.tokens[:-1]) and sorted(data.train_items + data.heldout_items) == [
        "cat", "dog"]
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("cat\ndog\n".encode("utf-16"))
    with pytest.raises(ValueError, match="utf16.txt.*UTF-16"):
        load_text_file(utf16)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("cat\ndog\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.txt:3: not valid UTF-8"):
        load_text_file(latin)
    huge = tmp_path / "huge.txt"
    huge.write_text("cat\n" + "x" * 100_000 + "\n")
    with pytest.raises(ValueError, match="huge.txt:2: line has 100000 characters"):
        load_text_file(huge)
    with pytest.raises(ValueError, match="max_length"):
        load_text_file(bom, max_length=10 ** 9)
