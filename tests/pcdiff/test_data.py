"""Data sources: the character vocabulary, the item container and the three loaders."""
import pathlib
import string
import sysconfig

import pytest
import torch

from pcdiff.data import ItemData, Vocabulary, load_dataset, load_python_lines, load_text_file, load_words


@pytest.fixture
def vocab():
    return Vocabulary.from_items(["cab", "bad"])


# ----- Vocabulary -----

def test_vocabulary_ids_are_sorted_chars_then_end_then_mask(vocab):
    assert vocab.tokens[:-1] == ["a", "b", "c", "d"]
    assert vocab.end_id == 4 and vocab.size == 5 and len(vocab) == 5
    assert vocab.mask_id == 5  # outside the output vocabulary


def test_encode_pads_with_end_and_decode_round_trips(vocab):
    ids = vocab.encode("cab", 6)
    assert ids == [2, 0, 1, 4, 4, 4]
    assert vocab.decode(ids) == "cab"
    assert vocab.decode(torch.tensor(ids)) == "cab"
    assert vocab.decode([1, 4, 0, 0]) == "b"  # stops at the first end symbol
    assert vocab.decode(vocab.encode("", 3)) == ""


def test_encode_errors_name_the_item(vocab):
    with pytest.raises(ValueError, match="'abcd'.*at most 3"):
        vocab.encode("abcd", 4)  # needs room for one end symbol
    with pytest.raises(ValueError, match="'abz'.*\\['z'\\]"):
        vocab.encode("abz", 8)


def test_decode_mask_raises_unless_displayed(vocab):
    ids = [0, vocab.mask_id, 1, vocab.end_id]
    with pytest.raises(ValueError, match="mask"):
        vocab.decode(ids)
    assert vocab.decode(ids, mask_char="_") == "a_b"
    with pytest.raises(ValueError, match="outside"):
        vocab.decode([0, 99])


@pytest.mark.parametrize(
    "ids, expected",
    [
        ([0, 1, 4, 4], True),
        ([4, 4, 4, 4], True),  # the empty string
        ([0, 4, 1, 4], False),  # a character after the end
        ([0, 1, 2, 3], False),  # no end symbol at all
        ([0, 5, 4, 4], False),  # a mask id
        ([4, 4, 4, 5], False),
    ],
)
def test_is_well_formed(vocab, ids, expected):
    assert vocab.is_well_formed(ids) is expected


def test_vocabulary_json_round_trip(vocab):
    again = Vocabulary.from_json(vocab.to_json())
    assert again == vocab and again.mask_id == vocab.mask_id
    with pytest.raises(ValueError, match="chars"):
        Vocabulary.from_json("{}")


def test_vocabulary_rejects_bad_chars():
    with pytest.raises(ValueError, match="single characters"):
        Vocabulary(["ab"])
    with pytest.raises(ValueError, match="duplicates"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.from_items([])


# ----- ItemData -----

def test_item_data_encodes_and_samples_by_weight():
    data = ItemData(["cab", "bad"], ["dab"], Vocabulary.from_items(["cab", "bad", "dab"]), 5,
                    train_weights=[1.0, 0.0])
    assert data.encode_train().shape == (2, 5) and data.encode_train().dtype == torch.long
    assert data.encode_heldout().shape == (1, 5)
    batch = data.sample_train_batch(16, torch.Generator().manual_seed(0))
    assert batch.shape == (16, 5)
    assert {data.vocab.decode(row) for row in batch} == {"cab"}  # zero weight is never drawn
    assert data.valid_set == {"cab", "bad", "dab"} and data.is_real("dab")


def test_item_data_sampling_is_seeded():
    data = ItemData(list("abcdefgh"), [], Vocabulary.from_items("abcdefgh"), 2)
    first = data.sample_train_batch(32, torch.Generator().manual_seed(3))
    again = data.sample_train_batch(32, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert data.encode_heldout().shape == (0, 2)


def test_item_data_rejects_mismatched_weights(vocab):
    with pytest.raises(ValueError, match="train_weights has 1 entries for 2"):
        ItemData(["cab", "bad"], [], vocab, 4, train_weights=[1.0])
    with pytest.raises(ValueError, match="train_weights must be finite"):
        ItemData(["cab", "bad"], [], vocab, 4, train_weights=[float("nan"), 1.0])
    with pytest.raises(ValueError, match="batch_size"):
        ItemData(["cab"], [], vocab, 4).sample_train_batch(0)


# ----- loaders -----

def test_load_words_split_is_by_type_and_deterministic():
    data = load_words(num_words=3000, max_length=8, heldout_fraction=0.2, seed=1)
    assert data.block_length == 9
    assert set(data.train_items).isdisjoint(data.heldout_items)
    assert len(data.heldout_items) == pytest.approx(0.2 * (len(data.train_items) + len(data.heldout_items)), abs=1)
    assert data.vocab.tokens[:-1] == list(string.ascii_lowercase)
    assert all(1 <= len(w) <= 8 and w.isascii() and w.isalpha() and w.islower() for w in data.valid_set)
    assert "the" in data.valid_set
    assert len(data.train_weights) == len(data.train_items) and min(data.train_weights) > 0
    assert load_words(num_words=3000, max_length=8, heldout_fraction=0.2, seed=1).heldout_items == data.heldout_items
    assert load_words(num_words=3000, max_length=8, heldout_fraction=0.2, seed=2).heldout_items != data.heldout_items
    heldout = data.encode_heldout()
    assert all(data.vocab.is_well_formed(row) for row in heldout)


def test_load_words_rejects_bad_arguments():
    with pytest.raises(ValueError, match="heldout_fraction"):
        load_words(num_words=100, heldout_fraction=1.0)
    with pytest.raises(ValueError, match="max_length"):
        load_words(num_words=100, max_length=0)


def test_load_python_lines_are_real_stdlib_lines():
    data = load_python_lines(max_length=24, max_lines=5000, seed=0)
    assert len(data.train_items) + len(data.heldout_items) == 5000
    assert set(data.train_items).isdisjoint(data.heldout_items)
    assert data.block_length == 25
    items = data.train_items + data.heldout_items
    assert all(0 < len(x) <= 24 and x == x.strip() and x.isascii() and x.isprintable() for x in items)
    assert set(items) <= data.valid_set
    # every short printable line of os.py is in the valid set, so lines really come from the stdlib
    os_py = pathlib.Path(sysconfig.get_paths()["stdlib"]) / "os.py"
    os_lines = {s.strip() for s in os_py.read_text().splitlines()}
    os_lines = {s for s in os_lines if 0 < len(s) <= 24 and s.isascii() and s.isprintable()}
    assert os_lines and os_lines <= data.valid_set
    assert "import os" in data.valid_set


def test_load_text_file_items_and_weights(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("alice\nbob\n\n  \nalice\ncarol smith\r\n")
    data = load_text_file(path, heldout_fraction=0.0)
    assert sorted(data.train_items) == ["alice", "bob", "carol smith"]
    assert data.block_length == len("carol smith") + 1
    assert dict(zip(data.train_items, data.train_weights)) == {"alice": 2.0, "bob": 1.0, "carol smith": 1.0}
    assert " " in data.vocab.tokens
    assert load_dataset(str(path), max_length=20).block_length == 21


def test_load_text_file_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_text_file(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_text_file(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.txt.*no non-blank lines"):
        load_text_file(empty)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n")
    with pytest.raises(ValueError, match="blank.txt"):
        load_text_file(blank)
    long = tmp_path / "long.txt"
    long.write_text("ok\nmuch too long\n")
    with pytest.raises(ValueError, match="long.txt:2: line has 13 characters, max_length is 5"):
        load_text_file(long, max_length=5)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="binary.txt.*UTF-8"):
        load_text_file(binary)


def test_load_dataset_dispatch(tmp_path):
    assert load_dataset("words", num_words=500).name == "words"
    with pytest.raises(FileNotFoundError, match="'wordz'.*words, python"):
        load_dataset("wordz")
