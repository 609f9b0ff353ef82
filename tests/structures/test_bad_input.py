"""Bad input fails early with the right exception type and a message that names the problem."""
import networkx as nx
import numpy as np
import pytest
import torch

import structures
from structures import Categorical, Circuit, LogParams, Product, StructureError, Sum


@pytest.fixture(scope="module")
def model():
    """Two variables with different vocabularies (2 and 4): soft evidence is [B, 2, 4]."""
    a, b = Categorical(0, 2, 2), Categorical(1, 2, 4)
    return structures.compile(Circuit(Sum(Product(a, b), num_nodes=1)), dtype=torch.float64)


X = torch.zeros(2, 2, dtype=torch.long)
QUERY_CASES = {
    "x float": (dict(x=X.float()), TypeError, "x must be an integer tensor"),
    "x bool": (dict(x=X.bool()), TypeError, "x must be an integer tensor"),
    "x 1-d": (dict(x=X[0]), ValueError, r"x must have shape \[batch, 2\]"),
    "x wrong width": (dict(x=torch.zeros(2, 3, dtype=torch.long)), ValueError, r"x must have shape \[batch, 2\]"),
    "x above vocab": (dict(x=torch.tensor([[2, 0]])), ValueError, r"x\[0, 0\] = 2 is out of range for variable 0"),
    "x above own vocab": (dict(x=torch.tensor([[1, 4]])), ValueError, r"x\[0, 1\] = 4 is out of range.*vocab 4"),
    "x negative": (dict(x=torch.tensor([[0, -1]])), ValueError, "out of range for variable 1"),
    "x per-variable vocab": (dict(x=torch.tensor([[3, 3]])), ValueError, r"x\[0, 0\] = 3 .*variable 0 \(vocab 2\)"),
    "observed int": (dict(x=X, observed=torch.ones(2, 2, dtype=torch.long)), TypeError,
                     "observed must be a bool tensor"),
    "observed wrong width": (dict(x=X, observed=torch.ones(2, 3, dtype=torch.bool)), ValueError,
                             r"observed must have shape"),
    "observed batch": (dict(x=X, observed=torch.ones(3, 2, dtype=torch.bool)), ValueError,
                       "observed has batch size 3"),
    "observed without x": (dict(observed=torch.ones(2, 2, dtype=torch.bool)), ValueError, "no x was given"),
    "soft int":
        (dict(soft_evidence=torch.zeros(2, 2, 4, dtype=torch.long)), TypeError, "soft_evidence must be a float"),
    "soft 2-d":
        (dict(soft_evidence=torch.zeros(2, 8)), ValueError, r"soft_evidence must have shape \[batch, 2, vocab\]"),
    "soft wrong positions": (dict(soft_evidence=torch.zeros(2, 3, 4)), ValueError, "soft_evidence must have shape"),
    "soft wrong vocab":
        (dict(soft_evidence=torch.zeros(2, 2, 3)), ValueError, "vocabulary size 3 but the circuit's is 4"),
    "soft NaN": (dict(soft_evidence=torch.tensor([[[0.0, float("nan"), 0, 0]] * 2])), ValueError, "NaN"),
    "soft +inf": (dict(soft_evidence=torch.tensor([[[0.0, float("inf"), 0, 0]] * 2])), ValueError, r"\+inf"),
    "soft batch": (dict(x=X, soft_evidence=torch.zeros(3, 2, 4)), ValueError, "soft_evidence has batch size 3"),
    "node potentials shape":
        (dict(x=X, node_potentials=torch.zeros(2, 3)), ValueError, r"node_potentials must have shape \[batch, 4\]"),
    "node potentials NaN":
        (dict(x=X, node_potentials=torch.full((2, 4), float("nan"))), ValueError, "node_potentials contains NaN"),
}


@pytest.mark.parametrize("query", ["log_prob", "marginals", "sample", "map"])
@pytest.mark.parametrize("case", list(QUERY_CASES))
def test_query_arguments_are_checked(model, query, case):
    kwargs, error, message = QUERY_CASES[case]
    with pytest.raises(error, match=message):
        getattr(model, query)(**kwargs)


def test_unobserved_entries_of_x_are_not_checked(model):
    """Entries where observed is False are placeholders: any value is allowed there."""
    lp = model.log_prob(torch.tensor([[-1, 7]]), torch.tensor([[False, False]]))
    assert torch.allclose(lp, torch.zeros(1, dtype=torch.float64))


def test_sample_count_is_checked(model):
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="num_samples must be a positive int"):
            model.sample(X, num_samples=bad)


def test_semiring_is_checked(model):
    from structures.queries.evidence import make_evidence
    with pytest.raises(ValueError, match="semiring must be 'sum' or 'max'"):
        model.upward(make_evidence(model, X), semiring="min")


def test_log_params_are_checked(model):
    lp = model.log_params()
    sums, inputs = [t.detach() for t in lp.sums], [t.detach() for t in lp.inputs]
    cases = [
        ([1], TypeError, "log_params must be a LogParams"),
        (LogParams([], inputs), ValueError, r"log_params.sums has 0 tables, the circuit has 1"),
        (LogParams(sums, inputs + inputs), ValueError, r"log_params.inputs has 4 tables, the circuit has 2"),
        (LogParams([torch.zeros(2, 1, 3)], inputs), ValueError, r"log_params.sums\[0\] must have shape \(1, 2\)"),
        (LogParams([sums[0].expand(3, -1, -1)], inputs), ValueError, "per-sample sum parameters have batch 3"),
        (LogParams(sums, [inputs[0].expand(2, -1, -1), inputs[1]]), ValueError, "input tables cannot be per-sample"),
        (LogParams([sums[0].long()], inputs), TypeError, r"log_params.sums\[0\] must be a float tensor"),
    ]
    for log_params, error, message in cases:
        for query in (model.log_prob, model.marginals, model.sample, model.map):
            with pytest.raises(error, match=message):
                query(X, log_params=log_params)


# ----------------------------------------------------------------------------- structures
def _leaf(var=0, k=2, vocab=2):
    return Categorical(var, k, vocab)


def _cycle_through_sums():
    inner = Sum(_leaf(), num_nodes=2)
    outer = Sum(inner, num_nodes=2)
    inner.children = (outer,)                                    # mutated after construction
    return Circuit(Sum(outer, num_nodes=1))


def _cycle_through_product():
    product = Product(_leaf(0, 1), _leaf(1, 1))
    top = Sum(product, num_nodes=1)
    product.children = (product.children[0], top)
    return Circuit(top)


def _mutated(group_factory, mutate):
    group = group_factory()
    mutate(group)
    return Circuit(group if group.num_nodes == 1 else Sum(group, num_nodes=1))


STRUCTURE_CASES = {
    "non-smooth sum": (lambda: Sum(_leaf(0), _leaf(1), num_nodes=1), "is not smooth"),
    "non-decomposable product": (lambda: Product(_leaf(0), _leaf(0)), "is not decomposable"),
    "root with several nodes":
        (lambda: Circuit(Product(_leaf(0), _leaf(1))), "has 2 nodes; a circuit has one root node"),
    "root not a group": (lambda: Circuit("root"), "root must be a node group"),
    "child not a group": (lambda: Sum("child", num_nodes=1), "is not a node group"),
    "edges out of range": (lambda: Product(_leaf(0), _leaf(1), edges=[[0, 2]]), r"edges\[:, 1\] points outside"),
    "edges negative": (lambda: Product(_leaf(0), _leaf(1), edges=[[-1, 0]]), r"edges\[:, 0\] points outside"),
    "edges wrong shape": (lambda: Product(_leaf(0), _leaf(1), edges=[[0, 1, 0]]), r"edges must be \[num_nodes, 2\]"),
    "edges not integers": (lambda: Product(_leaf(0), _leaf(1), edges=[[0.0, 1.0]]), "edges must be integers"),
    "probs not a distribution": (lambda: Categorical(0, 1, 2, probs=[[0.5, 0.6]]), "row 0 sums to 1.1, not 1"),
    "probs negative": (lambda: Categorical(0, 1, 2, probs=[[1.5, -0.5]]), "negative probabilities"),
    "probs NaN": (lambda: Categorical(0, 1, 2, probs=[[np.nan, 1.0]]), "NaN or infinite"),
    "probs wrong shape": (lambda: Categorical(0, 2, 2, probs=[[0.5, 0.5]]), r"expected shape \(2, 2\), got \(1, 2\)"),
    "weights not a distribution": (lambda: Sum(_leaf(), num_nodes=1, weights=[[0.2, 0.2]]), "sums to 0.4, not 1"),
    "weights wrong shape": (lambda: Sum(_leaf(), num_nodes=1, weights=[[1.0]]), r"expected shape \(1, 2\)"),
    "tie with other shape": (lambda: Categorical(1, 2, 3, tie_to=_leaf()), "cannot tie .* parameter shapes"),
    "tie sum with other shape": (lambda: Sum(_leaf(), num_nodes=1, tie_to=Sum(_leaf(), num_nodes=2)),
                                 "cannot tie .* parameter shapes"),
    "tie to another kind": (lambda: Sum(_leaf(), num_nodes=2, tie_to=_leaf()), "tie_to must be a Sum"),
    "tie and probs": (lambda: Categorical(1, 2, 2, probs=np.eye(2), tie_to=_leaf()), "either probs or tie_to"),
    "num_nodes zero": (lambda: Categorical(0, 0, 2), "num_nodes must be a positive int"),
    "negative variable": (lambda: Categorical(-1, 1, 2), "var must be a non-negative int"),
    "vocab zero": (lambda: Categorical(0, 1, 0), "vocab must be a positive int"),
    "cycle through sums": (_cycle_through_sums, "cycle"),
    "cycle through a product": (_cycle_through_product, "cycle"),
    "variables not 0..n-1": (lambda: Circuit(Sum(Product(_leaf(1, 1), _leaf(2, 1)), num_nodes=1)),
                             r"variables must be 0..n-1; no input group covers variable\(s\) \[0\]"),
    "inconsistent vocab": (lambda: Circuit(Sum(_leaf(0, 1, 2), _leaf(0, 1, 3), num_nodes=1)),
                           "variable 0 has vocab 3 here but 2"),
    "mutated probs": (lambda: _mutated(lambda: _leaf(0, 1), lambda g: setattr(g, "_probs", np.array([[0.5, 0.6]]))),
                      "rows must each sum to 1"),
    "mutated edges": (lambda: _mutated(lambda: Product(_leaf(0), _leaf(1)),
                                       lambda g: setattr(g, "edges", np.array([[0, 5], [1, 1]]))), "points outside"),
    "mutated sum children scope": (lambda: _mutated(lambda: Sum(_leaf(0), num_nodes=1),
                                                    lambda g: setattr(g, "children", (_leaf(1),))), "is not smooth"),
    "mutated product children": (lambda: _mutated(lambda: Product(_leaf(0), _leaf(1)),
                                                  lambda g: setattr(g, "children", (_leaf(0), _leaf(0)))),
                                 "is not decomposable"),
    "mutated sum child count": (lambda: _mutated(lambda: Sum(_leaf(0, 1), num_nodes=1),
                                                 lambda g: setattr(g, "children", (_leaf(0, 2),))),
                                "children now have 2 nodes, weights cover 1"),
}


BUILDER_CASES = {
    "hmm length zero": (lambda: structures.hmm(0, 2, 3), "length must be a positive int"),
    "hmm shared tables, inhomogeneous": (lambda: structures.hmm(3, 2, 3, homogeneous=False, transition=np.eye(2)),
                                         "need homogeneous=True"),
    "hmm emission shape": (lambda: structures.hmm(3, 2, 3, emission=np.full((2, 4), 0.25)), r"expected shape \(2, 3\)"),
    "chain spans": (lambda: structures.hidden_chain(4, 2, 3, span=[[0, 1], [3]]), "must partition positions 0..3"),
    "latent tree not a tree": (lambda: structures.latent_tree(nx.cycle_graph(4), 2, 3), "is not a tree"),
    "latent tree labels": (lambda: structures.latent_tree(nx.path_graph([1, 2, 3]), 2, 3), "must be the positions"),
    "mixture of non-circuits": (lambda: structures.mixture(_leaf()), "is not a Circuit"),
}
STRUCTURE_CASES.update(BUILDER_CASES)


@pytest.mark.parametrize("case", list(STRUCTURE_CASES))
def test_invalid_structures_are_refused(case):
    build, message = STRUCTURE_CASES[case]
    with pytest.raises(StructureError, match=message):
        build()


def test_probability_setters_validate():
    leaf = _leaf()
    with pytest.raises(StructureError, match="sums to"):
        leaf.probs = [[0.5, 0.6], [0.5, 0.5]]
    with pytest.raises(StructureError, match="expected shape"):
        Sum(leaf, num_nodes=1).weights = [[1.0]]


# ----------------------------------------------------------------------------- compile and learning
def test_compile_arguments_are_checked(model):
    circuit = model.to_circuit()
    with pytest.raises(TypeError, match="circuit must be a structures.Circuit, got Categorical"):
        structures.compile(_leaf())
    for dtype in (torch.float16, torch.int64, "float64"):
        with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
            structures.compile(circuit, dtype=dtype)


DATA = torch.zeros(10, 2, dtype=torch.long)
FIT_CASES = {
    "method": (dict(method="sgd"), ValueError, "method must be 'em' or 'adam'"),
    "data 1-d": (dict(data=DATA[0]), ValueError, r"data must be a non-empty \[N, 2\] tensor"),
    "data empty": (dict(data=DATA[:0]), ValueError, r"data must be a non-empty \[N, 2\] tensor"),
    "data wrong width":
        (dict(data=torch.zeros(10, 3, dtype=torch.long)), ValueError, r"data must be a non-empty \[N, 2\]"),
    "data float": (dict(data=DATA.float()), TypeError, "data must be an integer tensor"),
    "data out of range": (dict(data=DATA + 3), ValueError, r"data\[0, 0\] = 3 is out of range for variable 0"),
    "batch_size zero": (dict(batch_size=0), ValueError, "batch_size must be an int >= 1"),
    "epochs negative": (dict(epochs=-1), ValueError, "epochs must be an int >= 0"),
    "step_size zero": (dict(step_size=0.0), ValueError, r"step_size must be in \(0, 1\]"),
    "pseudocount negative": (dict(pseudocount=-1.0), ValueError, "pseudocount must be >= 0"),
    "lr negative": (dict(method="adam", lr=-1.0), ValueError, "lr must be > 0"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_arguments_are_checked(model, case):
    kwargs, error, message = FIT_CASES[case]
    kwargs = {"data": DATA, **kwargs}
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(error, match=message):
        structures.fit(model, progress=False, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))       # nothing was changed


def test_em_step_arguments_are_checked(model):
    for kwargs, message in ((dict(step_size=0.0), r"step_size must be in \(0, 1\]"),
                            (dict(step_size=1.5), r"step_size must be in \(0, 1\]"),
                            (dict(step_size=float("nan")), r"step_size must be in \(0, 1\]"),
                            (dict(pseudocount=-0.5), "pseudocount must be >= 0")):
        with pytest.raises(ValueError, match=message):
            structures.em_step(model, DATA, **kwargs)
    with pytest.raises(ValueError, match=r"x must have shape \[batch, 2\]"):
        structures.em_step(model, DATA[0])
    for learner in (structures.em_step, structures.fit):
        with pytest.raises(TypeError, match="model must be a CompiledCircuit"):
            learner(model.to_circuit(), DATA)


def test_impossible_data_is_refused_by_expected_counts(model):
    impossible = torch.full((1, 2, 4), float("-inf"), dtype=torch.float64)
    with pytest.raises(ValueError, match="probability zero"):
        structures.expected_counts(model, DATA[:1], soft_evidence=impossible)
