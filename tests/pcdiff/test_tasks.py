"""Measurements on the puzzles: the judge on hand-made tokens, a tiny end-to-end run of generation and
completion (shapes, keys, ranges), and the data spec of a run (a file's block = its longest line + 1)."""
import pytest
import torch

import structures
from pcdiff.app.runs import data_spec, load_data
from pcdiff.app.tasks import (completion_markdown, completion_rates, generation_markdown, generation_rates,
                              judge_task, standard_error)
from pcdiff.backbones import TinyDiffusionTransformer
from pcdiff.codd import CoDDLayer
from pcdiff.data import load_task


def _tiny(data):
    torch.manual_seed(0)
    return TinyDiffusionTransformer(data.vocab.size, data.vocab.mask_id, data.block_length, dim=16, depth=1,
                                    heads=2).eval()


@pytest.fixture(scope="module")
def permutations():
    data = load_task("permutations-3", heldout_fraction=0.34, seed=0)
    vocab = data.vocab
    layer = CoDDLayer(structures.permutation(3, 4, vocab=vocab.size, pad=vocab.end_id), mask_id=vocab.mask_id)
    return data, _tiny(data), layer


# ----- the judge -----

def test_judge_counts_valid_novel_distinct_and_malformed(permutations):
    data = permutations[0]
    vocab, end, mask = data.vocab, data.vocab.end_id, data.vocab.mask_id
    seen, unseen = data.train_items[0], data.heldout_items[0]
    rows = [vocab.encode(seen, 4), vocab.encode(seen, 4), vocab.encode(unseen, 4),
            vocab.encode("aab", 4),                                   # well formed, breaks the rules
            vocab.encode("ab", 4),                                    # well formed, too short
            [0, end, 1, end],                                         # a symbol after the end: malformed
            [0, 1, 2, 0],                                             # no end symbol: malformed
            [0, mask, 2, end]]                                        # a mask left: malformed
    judged = judge_task(torch.tensor(rows), data, "permutations-3")
    assert judged == {"num": 8, "valid": 3 / 8, "novel": 1 / 8, "distinct_valid": 2, "malformed": 3 / 8}


def test_judge_arguments_are_named(permutations):
    data = permutations[0]
    with pytest.raises(ValueError, match="tokens"):
        judge_task(torch.zeros(2, 5, dtype=torch.long), data, "permutations-3")
    with pytest.raises(ValueError, match="data"):
        judge_task(torch.zeros(2, 4, dtype=torch.long), data, "latin-4")
    with pytest.raises(ValueError, match="task"):
        judge_task(torch.zeros(2, 4, dtype=torch.long), data, "chess")
    assert standard_error(0.5, 100) == pytest.approx(0.05) and standard_error(1.0, 10) == 0.0


# ----- end to end, untrained (shapes, keys, ranges) -----

def test_generation_rates_end_to_end(permutations):
    data, backbone, layer = permutations
    results = generation_rates(backbone, layer, data, "permutations-3", num_samples=24, batch_size=10, seed=1,
                               codd_modes=("off", "joint"), progress=False)
    assert results["task"] == "permutations-3" and results["num_samples"] == 24
    assert set(results["rates"]) == {"off", "joint"}
    for mode in ("off", "joint"):
        assert list(results["rates"][mode]) == ["1", "2", "4"]        # 1, 2, ... up to the block length
        for cell in results["rates"][mode].values():
            assert cell["num"] == 24 and 0 <= cell["novel"] <= cell["valid"] <= 1
            assert 0 <= cell["malformed"] <= 1 and 0 <= cell["valid_se"] <= 0.5 and cell["distinct_valid"] <= 6
    # the permutation circuit is exactly uniform on permutations: a joint draw is never anything else
    assert all(cell["valid"] == 1.0 for cell in results["rates"]["joint"].values())
    assert results["perfect_factorized"] == {"1": pytest.approx(6 / 27), "4": 1.0}
    again = generation_rates(backbone, layer, data, "permutations-3", num_samples=24, batch_size=10, seed=1,
                             progress=False)
    assert again["rates"] == results["rates"]                        # seeded
    table = generation_markdown(results)
    assert table.count("\n") == 2 + 2 + 3 and "perfect factorized" in table and "0.222" in table


def test_completion_rates_end_to_end():
    data = load_task("latin-4", seed=0)
    backbone = _tiny(data)
    layer = CoDDLayer.from_structure("hmm", data.block_length, data.vocab.size, num_states=4,
                                     mask_id=data.vocab.mask_id)
    results = completion_rates(backbone, layer, data, "latin-4", blanks_list=(4, 12), num_puzzles=6,
                               steps_list=(1, 2, 17), seed=0, progress=False)
    assert set(results["rates"]) == {"off", "joint"} and results["num_puzzles"] == 6
    for mode in ("off", "joint"):
        assert set(results["rates"][mode]) == {"4", "12"}
        for by_steps in results["rates"][mode].values():
            assert list(by_steps) == ["1", "2", "17"]
            for cell in by_steps.values():
                assert cell["num"] == 6 and 0 <= cell["exact"] <= 1 and 0 <= cell["malformed"] <= 1
    for k in ("4", "12"):
        assert set(results["perfect_factorized"][k]) == {"1", "17"}   # 2 steps: no closed form
        assert 0 < results["perfect_factorized"][k]["1"] <= 1 and results["perfect_factorized"][k]["17"] == 1.0
        assert results["completions_per_puzzle"][k] >= 1
    assert completion_markdown(results).count("\n") == 2 + 2 + 6


def test_rate_arguments_are_named(permutations):
    data, backbone, layer = permutations
    with pytest.raises(ValueError, match="steps_list"):
        generation_rates(backbone, layer, data, "permutations-3", steps_list=[0], num_samples=2, progress=False)
    with pytest.raises(ValueError, match="layer"):
        generation_rates(backbone, None, data, "permutations-3", num_samples=2, progress=False)
    with pytest.raises(ValueError, match="codd_modes"):
        generation_rates(backbone, layer, data, "permutations-3", codd_modes=("both",), progress=False)
    with pytest.raises(ValueError, match="blanks_list"):
        completion_rates(backbone, layer, data, "permutations-3", blanks_list=(4,), progress=False)
    with pytest.raises(ValueError, match="held-out"):
        completion_rates(backbone, layer, load_task("permutations-3", heldout_fraction=0.0), "permutations-3",
                         blanks_list=(2,), progress=False)


# ----- a run's data spec -----

def test_a_data_file_without_max_length_gets_its_longest_line(tmp_path):
    path = tmp_path / "grids.txt"
    path.write_text("\n".join(load_task("latin-4").train_items[:20]) + "\nshort\n")
    spec = data_spec(None, str(path), seed=0)
    assert "max_length" not in spec and spec["source"] == str(path.resolve())
    assert load_data(spec).block_length == 17 == load_data(dict(spec)).block_length
    assert data_spec(None, str(path), seed=0, max_length=20)["max_length"] == 20
    assert load_data(data_spec(None, str(path), seed=0, max_length=20)).block_length == 21
    assert load_data(data_spec("sudoku-4", None, seed=2)).block_length == 17
