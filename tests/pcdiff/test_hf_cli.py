"""`pcdiff train --backbone hf:DIR` and `pcdiff sample RUN --prompt` through the CLI, on a tiny DiffusionGemma
(uniform noise) and a tiny BERT (masked) saved with a character-level tokenizer in tmp_path (no hub)."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from transformers.utils import logging as hf_logging  # noqa: E402

from pcdiff.app.cli import main  # noqa: E402

from .test_diffusion_gemma import tiny_config  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[MASK]"]
WORDS = ["cat", "dog", "bird", "fish", "cow", "hen", "pig", "fox", "owl", "bee", "ant", "elk", "yak", "emu",
         "bat", "rat", "eel", "ape", "gnu", "ram", "ewe", "doe", "cub", "kid", "pup", "kit", "colt", "calf",
         "lamb", "foal", "mare", "bull", "boar", "sow", "hog", "mole", "vole", "newt", "toad", "frog"]


def save_tokenizer(directory):
    """A character-level tokenizer: [PAD] [UNK] [BOS] [MASK] then a-z (30 ids)."""
    vocab = {token: i for i, token in enumerate(SPECIALS + list(LETTERS))}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex("."), behavior="isolated")
    tok.decoder = tokenizers.decoders.Fuse()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                bos_token="[BOS]", mask_token="[MASK]")
    fast.save_pretrained(directory)
    return len(vocab)


def _model(kind, vocab):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if kind == "gemma":
            config = tiny_config(vocab=vocab, canvas=6)
            config.text_config.max_position_embeddings = 16                 # a prompt limit to test
            return transformers.DiffusionGemmaForBlockDiffusion(config)
        config = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=16)
        return transformers.BertForMaskedLM(config)


@pytest.fixture(scope="module", params=["gemma", "bert"])
def model_dir(request, tmp_path_factory):
    hf_logging.set_verbosity_error()
    directory = tmp_path_factory.mktemp(request.param)
    _model(request.param, save_tokenizer(directory)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


def train(model_dir, words, out, *extra):
    return main(["train", "--backbone", f"hf:{model_dir}", "--data", str(words), "--max-length", "6",
                 "--num-states", "4", "--layer-steps", "3", "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def run(model_dir, words, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert train(model_dir, words, out) == 0
    return out


def _completions(capsys, *argv):
    capsys.readouterr()
    assert main(["sample", *argv]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("codd", ["joint", "off"])
def test_train_then_sample_round_trip(run, capsys, codd):
    for prompt in (["--prompt", "ca"], []):
        lines = _completions(capsys, str(run), *prompt, "--num", "3", "--steps", "2", "--codd", codd)
        assert len(lines) == 3 and all(set(line) <= set(LETTERS) and len(line) <= 6 for line in lines)
    assert _completions(capsys, str(run), "--prompt", "ca", "--num", "3", "--codd", codd, "--seed", "5") == \
        _completions(capsys, str(run), "--prompt", "ca", "--num", "3", "--codd", codd, "--seed", "5")


def test_a_learned_backbone_weight_and_an_em_warm_start_train_and_sample(model_dir, words, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(model_dir, words, out, "--adapter", "backbone_weight", "--em-init-epochs", "1") == 0
    settings = json.loads((out / "run.json").read_text())
    assert settings["adapter"] == "backbone_weight" and settings["layer"]["em_init_epochs"] == 1
    lines = _completions(capsys, str(out), "--num", "3", "--steps", "2", "--codd", "joint")
    assert len(lines) == 3 and all(set(line) <= set(LETTERS) for line in lines)


def test_a_changed_model_is_refused(model_dir, words, tmp_path, capsys):
    changed = tmp_path / "model"
    kind = "gemma" if "gemma" in model_dir.name else "bert"
    model = _model(kind, save_tokenizer(changed))
    model.save_pretrained(changed)
    assert train(changed, words, tmp_path / "run") == 0
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(changed)
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run")]) == 2
    assert "changed since training" in capsys.readouterr().err


def test_user_errors_are_named(model_dir, run, words, tmp_path, capsys):
    bare = tmp_path / "bare"
    _model("bert", 30).save_pretrained(bare)                   # weights, no tokenizer
    assert train(bare, words, tmp_path / "r1") == 2
    assert "no tokenizer" in capsys.readouterr().err
    assert main(["sample", str(run), "--prompt", "abcdefghijklmnop"]) == 2
    assert "prompt tokens" in capsys.readouterr().err
    assert main(["eval", str(run)]) == 2
    assert "only `pcdiff sample`" in capsys.readouterr().err
    assert train(model_dir, words, tmp_path / "r2", "--noise", "uniform") == 2
    assert "--noise" in capsys.readouterr().err
    assert train(model_dir, words, tmp_path / "r3", "--backbone-dim", "8", "--backbone-depth", "1") == 2
    assert "--backbone-dim, --backbone-depth apply to the tiny backbone only" in capsys.readouterr().err
    if "gemma" in model_dir.name:                                 # knobs the model's own loop would ignore
        assert main(["sample", str(run), "--temperature", "0.5"]) == 2
        assert "do not apply to DiffusionGemma" in capsys.readouterr().err


def test_a_large_vocabulary_gets_a_top_k_layer(words, tmp_path):
    save_tokenizer(tmp_path / "big")
    config = transformers.BertConfig(vocab_size=1100, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                                     intermediate_size=16, max_position_embeddings=16, mask_token_id=3)
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path / "big")
    assert train(tmp_path / "big", words, tmp_path / "run") == 0
    layer = json.loads((tmp_path / "run" / "layer.json").read_text())["config"]["layer"]
    assert (layer["vocab_size"], layer["top_k"]) == (1100, 256)
    assert main(["sample", str(tmp_path / "run"), "--prompt", "ca", "--num", "2", "--quiet"]) == 0
