"""The demo's controls: per-item scores checked against brute force and the chain rule by hand; the
controls table on a tiny run (item sets by type, one-token row, circuits alone) and its report."""
import math

import numpy as np
import pytest
import torch

import structures
from pcdiff.app.controls import ControlSettings, control_table, item_sets
from pcdiff.app.evaluation import red_flags
from pcdiff.app.report import controls_tables
from pcdiff.app.scoring import (backbone_scores, circuit_scores, fixed_masks, left_to_right, marginal_scores,
                                mean_ci)
from helpers.brute import all_assignments, evaluate
from helpers.stubs import StubBackbone, contextual


def test_circuit_scores_are_the_exact_conditional_by_brute_force():
    circuit = structures.hmm(4, 3, 3, seed=2)
    assignments = all_assignments(circuit)
    probs = evaluate(circuit, assignments)
    x0 = torch.tensor([[0, 2, 1, 1], [2, 2, 0, 1], [1, 0, 0, 2]])
    masked = torch.tensor([[True, False, True, False], [False, True, True, True], [True, True, True, True]])
    got = circuit_scores(structures.compile(circuit, dtype=torch.float64), x0, masked)
    for row in range(3):
        x, m = x0[row].numpy(), masked[row].numpy()
        agree = (assignments[:, ~m] == x[~m]).all(1)                   # completions of the observed part
        joint = probs[(assignments == x).all(1)].sum()
        assert float(got[row]) == pytest.approx(-math.log(joint / probs[agree].sum()), rel=1e-9)


def test_marginal_scores_of_a_circuit_are_its_exact_one_step_by_brute_force():
    circuit = structures.hmm(4, 3, 3, seed=5)
    assignments = all_assignments(circuit)
    probs = evaluate(circuit, assignments)
    x0 = torch.tensor([[0, 2, 1, 1], [2, 2, 0, 1]])
    masked = torch.tensor([[True, False, True, False], [False, True, True, True]])
    got = marginal_scores(structures.compile(circuit, dtype=torch.float64), x0, masked)
    for row in range(2):
        x, m = x0[row].numpy(), masked[row].numpy()
        agree = (assignments[:, ~m] == x[~m]).all(1)
        expected = sum(-math.log(probs[agree & (assignments[:, i] == x[i])].sum() / probs[agree].sum())
                       for i in np.flatnonzero(m))
        assert float(got[row]) == pytest.approx(expected, rel=1e-9)


def test_sequential_is_the_chain_rule_in_the_given_order_and_one_step_at_one_token():
    backbone = StubBackbone(contextual(4, seed=3))
    x0 = torch.tensor([[1, 3, 0, 2], [4, 4, 2, 0]])
    masked = torch.tensor([[True, True, False, True], [True, True, False, True]])
    keys = {"left_to_right": left_to_right(x0), "reverse": -left_to_right(x0)}
    scores = backbone_scores(backbone, None, x0, masked, keys)

    def chain(order):
        total, current = torch.zeros(2), torch.where(masked, backbone.mask_id, x0)
        for pos in order:
            logp = torch.log_softmax(backbone.logits_fn(current).float(), -1)[:, pos]
            total -= logp.gather(1, x0[:, pos, None]).squeeze(1)
            current[:, pos] = x0[:, pos]
        return total
    torch.testing.assert_close(scores["sequential:left_to_right"], chain([0, 1, 3]))
    torch.testing.assert_close(scores["sequential:reverse"], chain([3, 1, 0]))
    one = fixed_masks(x0, 1, torch.Generator().manual_seed(0))
    at_one = backbone_scores(backbone, None, x0, one, {"left_to_right": left_to_right(x0)})
    torch.testing.assert_close(at_one["sequential:left_to_right"], at_one["one_step"])
    with pytest.raises(ValueError, match="same number"):
        backbone_scores(backbone, None, x0, torch.tensor([[True] * 4, [True, False, False, False]]))


def test_mean_ci_is_the_normal_interval_of_the_per_item_mean():
    values = torch.tensor([1.0, 2.0, 4.0, 5.0])
    cell = mean_ci(values)
    assert cell["mean"] == pytest.approx(3.0)
    assert cell["ci95"] == pytest.approx(1.959964 * np.std([1, 2, 4, 5], ddof=1) / 2)
    assert math.isnan(mean_ci(torch.tensor([1.0]))["ci95"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from pcdiff.app.demo import prepare_run, train_prepared
    path = tmp_path_factory.mktemp("controls") / "words.txt"
    path.write_text("\n".join(["cat", "dog", "bird", "fish", "cow", "owl", "bee", "ant", "eel", "yak", "emu",
                               "ram", "hen", "pig", "fox", "elk", "gnu", "bat", "cod", "asp"]) + "\n")
    run = prepare_run(None, str(path), max_length=5, seed=1, num_states=4, backbone_dim=16, backbone_depth=1)
    return train_prepared(run, backbone_steps=4, layer_steps=2, progress=False)


def test_item_sets_split_seen_types_from_unseen_ones(tiny_run):
    data = tiny_run.data
    sets = item_sets(data, 30, seed=0)
    decode = lambda rows: {data.vocab.decode(r) for r in rows.tolist()}       # noqa: E731
    assert len(sets["in_distribution"]) == 30 and decode(sets["in_distribution"]) <= set(data.train_items)
    assert decode(sets["unseen_types"]) == set(data.heldout_items)         # fewer than 30: all of them
    assert decode(sets["unseen_types"]).isdisjoint(data.train_items)


def test_control_table_has_every_control_and_the_report_prints_it(tiny_run):
    settings = ControlSettings(items=12, mask_draws=2, random_orders=2, fit_epochs=1)
    controls = control_table(tiny_run.backbone, tiny_run.layer, tiny_run.data, 4, settings, progress=False)
    assert set(controls["sets"]) == {"in_distribution", "unseen_types"}
    assert set(controls["standalone"]) == {"hmm_em", "circuit_alone"}
    rows = controls["sets"]["in_distribution"]["rows"]
    assert list(rows) == ["1 token", "0.25", "0.5", "0.75", "1.0"]
    assert [row["masked"] for row in rows.values()] == [1, 2, 3, 4, 6]
    methods = {"one_step", "codd", "hmm_em", "circuit_alone", "sequential:left_to_right", "sequential:random_1",
               "sequential:random_2"}
    for row in rows.values():
        assert methods <= set(row) and all(row[m]["mean"] > 0 and row[m]["ci95"] >= 0 for m in methods)
        floor = min(row[m]["mean"] for m in methods if m.startswith("sequential"))
        assert row["sequential_best"]["mean"] == floor
        assert row["codd_gain"]["mean"] == pytest.approx(row["one_step"]["mean"] - row["codd"]["mean"])
    one = rows["1 token"]
    assert one["sequential:left_to_right"]["mean"] == pytest.approx(one["one_step"]["mean"])
    # the exact floor of the in-distribution items: no model beats the distribution they are drawn from
    for row in rows.values():
        truth = row["training_distribution"]["mean"]
        assert 0 <= truth <= min(row[m]["mean"] for m in methods) + 1e-9
        assert row["backbone_excess"]["mean"] == pytest.approx(row["one_step"]["mean"] - truth)
        assert row["data_factorization_gap"]["mean"] == pytest.approx(
            row["training_distribution_one_step"]["mean"] - truth)
    assert rows["1 token"]["data_factorization_gap"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert all("training_distribution" not in row for row in controls["sets"]["unseen_types"]["rows"].values())
    assert controls["codd_gain_one_token"]["in_distribution"] == one["codd_gain"]
    text = "\n".join(controls_tables(controls))
    assert "CoDD's gain over one-step at one masked token" in text and "### unseen types" in text
    assert text.count("| 1 token (1) |") == 2
    assert "excess over the training distribution at one masked token" in text and "(exact)" in text


def test_the_circuits_alone_and_the_exact_floor_can_be_left_out_and_the_rest_is_unchanged(tiny_run):
    settings = ControlSettings(items=6, fit_epochs=1)
    full = control_table(tiny_run.backbone, tiny_run.layer, tiny_run.data, 4, settings, progress=False)
    lean = control_table(tiny_run.backbone, tiny_run.layer, tiny_run.data, 4,
                         ControlSettings(items=6, fit_epochs=1, circuits_alone=False, exact_floor_limit=1),
                         progress=False)
    assert lean["standalone"] == {}
    for name, table in lean["sets"].items():
        for label, row in table["rows"].items():
            assert "hmm_em" not in row and "circuit_alone" not in row and "training_distribution" not in row
            assert row["codd_gain"] == full["sets"][name]["rows"][label]["codd_gain"]
    with pytest.raises(ValueError, match="circuits_alone"):
        ControlSettings(circuits_alone="no")


def test_red_flags_name_a_repairing_layer_and_a_figure_below_the_floor():
    quiet = red_flags({"mean": 0.01, "ci95": 0.02}, {"0.5": 0.7, "0.9": 0.4})
    assert quiet == []
    repair, below = red_flags({"mean": 0.10, "ci95": 0.02}, {"0.25": 2.5, "0.5": 1.1, "0.9": 0.8})
    assert "0.100 ± 0.020" in repair and "repairs the backbone's conditionals" in repair
    assert "masked fraction 0.25, 0.5 " in below and "0.9" not in below
    # a gain inside its interval is no flag, however large the mean
    assert red_flags({"mean": 0.05, "ci95": 0.06}, {}) == []
