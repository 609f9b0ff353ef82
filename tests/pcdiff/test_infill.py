"""`pcdiff infill`: items with '?' at unknown positions in, completions out (one a line, --num per item),
seeded; every bad line refused before decoding with one line naming it."""
import subprocess
import sys

import pytest
import torch

from pcdiff.app.cli import main
from pcdiff.app.infill import infill, read_items
from pcdiff.app.runs import load_run

TINY = ["--max-length", "6", "--backbone-steps", "8", "--layer-steps", "4", "--num-states", "8", "--quiet"]
WORDS = ["cat", "dog", "bird", "fish", "cow", "owl", "bee", "ant", "eel", "yak", "emu", "ram"] * 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("infill")
    data = folder / "words.txt"
    data.write_text("\n".join(WORDS) + "\n")
    assert main(["train", "--data", str(data), "--out", str(folder / "run"), *TINY]) == 0
    return folder / "run"


def test_completions_keep_the_known_characters_and_fill_every_unknown_one(run):
    loaded = load_run(run)
    items = read_items("c?t\n??\nb?r?\n", loaded.data.vocab, loaded.data.block_length)
    mask = loaded.backbone.mask_id
    assert items.shape == (3, loaded.data.block_length) and int((items == mask).sum()) == 5
    for codd in ("off", "joint", "any_order"):
        out = infill(loaded, items, num=4, steps=1, codd=codd, generator=torch.Generator().manual_seed(0))
        given = items.repeat_interleave(4, dim=0)
        assert out.shape == given.shape and not bool((out == mask).any())
        assert torch.equal(out[given != mask], given[given != mask])


def test_the_command_writes_num_completions_per_item_seeded(run, tmp_path, capsys):
    items = tmp_path / "items.txt"
    items.write_text("c?t\n?o?\n")
    out = tmp_path / "out.txt"
    args = ["infill", str(run), "--input", str(items), "--output", str(out), "--num", "3", "--seed", "5"]
    assert main(args) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 6
    assert main(args[:4] + ["--num", "3", "--seed", "5"]) == 0                  # to standard output
    assert capsys.readouterr().out.splitlines() == lines
    piped = subprocess.run([sys.executable, "-m", "pcdiff", "infill", str(run), "--num", "3", "--seed", "5",
                            "--steps", "2", "--codd", "any_order"], input="c?t\n?o?\n", capture_output=True,
                           text=True)
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 6


@pytest.mark.parametrize("text, message", [
    ("cat\n", "input:1: nothing to fill"),
    ("c?t\nabcdefgh?\n", "input:2: 9 characters; the run's items have at most 6"),
    ("c?t\nZ?\n", "input:2: characters outside the run's vocabulary: 'Z'"),
    ("", "no items"),
])
def test_bad_lines_are_named_before_decoding(run, tmp_path, capsys, text, message):
    items = tmp_path / "items.txt"
    items.write_text(text)
    assert main(["infill", str(run), "--input", str(items)]) == 2
    err = capsys.readouterr().err.strip()
    assert message.replace("input", str(items), 1) in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("options, message", [
    (["--mask-char", "a"], "--mask-char 'a' is a character of the run's vocabulary"),
    (["--mask-char", "??"], "--mask-char must be one character"),
    (["--num", "0"], "--num must be an int >= 1"),
    (["--steps", "99"], "--steps must be in [1, 7]"),
    (["--input", "missing.txt"], "--input missing.txt: no such file"),
])
def test_bad_options_are_named(run, tmp_path, capsys, options, message):
    items = tmp_path / "items.txt"
    items.write_text("c?t\n")
    assert main(["infill", str(run), "--input", str(items), *options]) == 2
    assert message in capsys.readouterr().err
