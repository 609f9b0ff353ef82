"""The known-truth benchmark (``python -m benchmarks.known_truth``): its truth row is the exact
conditional (brute force over the masked positions' completions), and a quick run prints the table."""
import itertools
import math

import numpy as np
import torch

import structures
from benchmarks import known_truth
from helpers.brute import evaluate
from pcdiff.app.scoring import circuit_scores, fixed_masks


def test_the_truth_is_the_exact_conditional_by_brute_force():
    circuit = known_truth.reference(states=3, stay=0.85, seed=4)
    truth = structures.compile(circuit, dtype=torch.float64)
    x0 = known_truth.draw(truth, 5, torch.Generator().manual_seed(0))
    masked = fixed_masks(x0, 3, torch.Generator().manual_seed(1))
    got = circuit_scores(truth, x0, masked)
    for row in range(len(x0)):
        where = masked[row].nonzero().squeeze(1).numpy()
        completions = np.repeat(x0[row].numpy()[None], known_truth.VOCAB ** 3, axis=0)
        completions[:, where] = list(itertools.product(range(known_truth.VOCAB), repeat=3))
        joint = evaluate(circuit, x0[row].numpy()[None])[0]
        expected = -math.log(joint / evaluate(circuit, completions).sum())
        assert abs(float(got[row]) - expected) < 1e-9


@torch.no_grad()
def test_the_reference_couples_far_positions():
    """Sticky transitions: the first token is evidence about the last, fifteen positions away (the
    sample mean of log p(x_last | x_first) − log p(x_last), an estimate of their mutual information)."""
    truth = structures.compile(known_truth.reference(states=8, stay=0.95, seed=0), dtype=torch.float64)
    x0 = known_truth.draw(truth, 400, torch.Generator().manual_seed(2))
    first, last = (torch.zeros_like(x0, dtype=torch.bool) for _ in range(2))
    first[:, 0], last[:, -1] = True, True
    given_first = truth.log_prob(x0, observed=first | last) - truth.log_prob(x0, observed=first)
    assert float((given_first - truth.log_prob(x0, observed=last)).mean()) > 0.02


def test_quick_run_prints_the_table(capsys):
    assert known_truth.main(["--quick", "--quiet"]) == 0
    out = capsys.readouterr().out
    for fraction in known_truth.FRACTIONS:
        assert f"| {fraction} | " in out
    assert "CoDD is within" in out and "truth" in out
    assert "| 1 token | " in out and "At one masked token CoDD gains" in out
    assert "The exponent β" not in out                   # the static layer puts no weight on the backbone


def test_quick_run_with_a_learned_backbone_weight_reports_it(capsys, tmp_path):
    report = tmp_path / "results.md"
    assert known_truth.main(["--quick", "--quiet", "--adapter", "backbone_weight", "--em-init-epochs", "1",
                             "--seeds", "0,1", "--out", str(report)]) == 0
    out = capsys.readouterr().out
    written = report.read_text()
    assert "known-truth-backbone_weight-4-em1:begin" in written and "Over seeds 0, 1 (" in written
    assert written.count("The exponent β") == 2
    assert "first fit alone by 1 EM epochs" in out and "The exponent β" in out
    assert out.count("| 0.5 | ") == 3 and "circuit alone" in out      # two seeds and their summary
    assert "CoDD's gain over one-step at one masked token" in written
