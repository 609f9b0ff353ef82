"""Checkpoints and run folders under hostile edits: sizes that would allocate terabytes, non-finite
weights behind a recomputed SHA-256, fields of the wrong type, files of two runs mixed in one folder,
and the leftovers of killed writes."""
import json
import os
import shutil

import pytest
import torch

from helpers.checkpoints import edit_json, hold_lock, poison, replace_tensors, tiny_layer_config
from pcdiff import CoDDLayer, TinyDiffusionTransformer
from pcdiff.app import runs
from pcdiff.app.cli import main
from pcdiff.app.demo import train_run
from pcdiff.codd import recipe
from pcdiff.files import atomic_write_folder, atomic_write_text
from pcdiff.train.checkpoint import (CheckpointError, load_backbone, load_checkpoint, load_layer, save_backbone,
                                     save_layer)

WORDS = ["cat", "dog", "bird", "fish", "cow", "owl", "bee", "ant", "eel", "yak", "emu", "ram"]


@pytest.fixture(scope="module")
def words_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


def tiny_run(words_file, seed=0):
    return train_run(data_file=str(words_file), max_length=5, seed=seed, num_states=3, adapter="low_rank",
                     backbone_steps=1, layer_steps=1, backbone_dim=8, backbone_depth=1, progress=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, words_file):
    folder = tmp_path_factory.mktemp("saved") / "run"
    runs.save_run(tiny_run(words_file), folder)
    return folder


@pytest.fixture
def folder(saved, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(saved, copy)
    return copy


@pytest.fixture
def never_built(monkeypatch):
    """Building a layer or a circuit fails the test: a refusal must come before it."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a layer was built from an unchecked config")
    monkeypatch.setattr(CoDDLayer, "from_structure", forbidden)


# ----------------------------------------------------------------------------- sizes read from files
@pytest.mark.parametrize("edit, fields", [
    (lambda c: c["recipe"].update(num_states=1_000_000), ["num_states = 1000000"]),
    (lambda c: c["recipe"].update(hidden=1_000_000) or c["recipe"].pop("num_states"), ["num_states = 1000000"]),
    (lambda c: c["recipe"].update(block_length=10 ** 7) or c.update(block_length=10 ** 7), ["block_length"]),
    (lambda c: c["recipe"].update(vocab_size=10 ** 9) or c.update(vocab_size=10 ** 9), ["vocab_size"]),
    (lambda c: c.update(hidden_size=10 ** 9), ["hidden_size"]),
    (lambda c: c["adapter_kwargs"].update(rank=10 ** 9), ["rank"]),
])
def test_layer_json_sizes_are_checked_before_anything_is_built(edit, fields, folder, never_built):
    edit_json(folder / "layer.json", lambda r: edit(r["config"]["layer"]))
    with pytest.raises(CheckpointError, match="layer.json") as info:
        load_layer(folder / "layer.json")
    assert all(field in str(info.value) for field in fields), str(info.value)


@pytest.mark.parametrize("field, value, message", [
    ("num_states", "8", "recipe.num_states"), ("num_states", True, "recipe.num_states"),
    ("structure", "mlp", "recipe.structure"), ("seed", -1, "recipe.seed"),
    ("tree_edges", [[0, 99]], "recipe.tree_edges"),
])
def test_layer_recipe_fields_are_named(field, value, message, folder, never_built):
    def edit(record):
        layer = record["config"]["layer"]
        layer["recipe"][field] = value
        if field == "tree_edges":
            layer["recipe"]["structure"] = "tree"
    edit_json(folder / "layer.json", edit)
    with pytest.raises(CheckpointError, match=f"layer.json.*{message}"):
        load_layer(folder / "layer.json")


@pytest.mark.parametrize("changes, message", [
    (dict(dtype="nn"), "dtype"), (dict(temperature="hot"), "temperature"), (dict(temperature=float("nan")),
                                                                             "temperature"),
    (dict(top_k=10 ** 9), "top_k"), (dict(adapter="lora"), "adapter"), (dict(mask_id=-3), "mask_id"),
    (dict(adapter_kwargs={"rnak": 2}), "adapter_kwargs.rnak"), (dict(adapter_kwargs=[1]), "adapter_kwargs"),
    (dict(block_length=9), "block_length"),
])
def test_from_config_checks_every_field(changes, message):
    with pytest.raises(ValueError, match=message):
        CoDDLayer.from_config(tiny_layer_config(**changes))


def test_from_config_refuses_above_the_limit_and_sizes_exactly():
    config = tiny_layer_config()
    config["recipe"]["num_states"] = 10 ** 6
    with pytest.raises(ValueError, match="recipe.num_states = 1000000.*MAX_VALUES"):
        CoDDLayer.from_config(config)
    for structure in recipe.STRUCTURES:
        layer = CoDDLayer.from_structure(structure, 5, 7, num_states=3)
        assert recipe.layer_values(structure, 5, 7, 3) == sum(p.numel() for p in layer.parameters())


@pytest.mark.parametrize("field, value", [("dim", 10 ** 6), ("depth", 10 ** 9), ("vocab_size", 10 ** 12),
                                          ("mask_id", 10 ** 12), ("heads", 3), ("dim", "8"), ("dropout", 2.0),
                                          ("extra", 1)])
def test_backbone_json_model_fields_are_checked_before_building(field, value, folder):
    edit_json(folder / "backbone.json", lambda r: r["config"]["model"].update({field: value}))
    with pytest.raises(CheckpointError, match=f"backbone.json.*{field}"):
        load_backbone(folder / "backbone.json")


def test_parameter_values_of_the_tiny_backbone_are_exact():
    for config in (dict(vocab_size=7, mask_id=7, block_length=5), dict(vocab_size=30, mask_id=2, block_length=9,
                                                                       dim=16, depth=3, heads=2, mlp_ratio=2)):
        assert TinyDiffusionTransformer.parameter_values(config) == TinyDiffusionTransformer(**config).num_parameters()


# ----------------------------------------------------------------------------- non-finite weights
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("file", ["layer", "backbone"])
def test_non_finite_weights_are_refused_by_name(file, value, folder):
    name = poison(folder / f"{file}.json", value=value)
    with pytest.raises(CheckpointError, match=f"{file}.safetensors.*{name}.*non-finite"):
        load_checkpoint(folder / f"{file}.json")


@pytest.mark.parametrize("command", [["sample", "--num", "2"], ["eval", "--samples", "2", "--quiet"]])
def test_sample_and_eval_refuse_a_nan_checkpoint_instead_of_printing_garbage(command, folder, capsys):
    name = poison(folder / "layer.json", "circuit.inputs.0.logits")
    sha = json.loads((folder / "layer.json").read_text())["sha256"]           # the run's record edited too
    edit_json(folder / "run.json", lambda r: r["checkpoints"].update(layer_sha256=sha))
    assert main([command[0], str(folder), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert "layer.safetensors" in err and name in err and "probability zero" not in err


def test_training_checkpoints_with_nan_state_are_refused(tmp_path):
    from pcdiff.train.checkpoint import save_checkpoint
    meta = save_checkpoint(tmp_path / "step-000000002", {"optim.0.exp_avg": torch.zeros(3), "rng.data":
                                                          torch.zeros(3, dtype=torch.uint8)}, {"kind": "x"})
    poison(meta, "optim.0.exp_avg")
    with pytest.raises(CheckpointError, match="optim.0.exp_avg"):
        load_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- one run, one folder
def test_a_folder_mixing_two_runs_is_refused(folder, words_file):
    other = folder.parent / "other"
    runs.save_run(tiny_run(words_file, seed=1), other)
    for suffix in (".json", ".safetensors"):                        # a new backbone beside the old layer
        shutil.copy(other / f"backbone{suffix}", folder / f"backbone{suffix}")
    with pytest.raises(CheckpointError, match="different runs"):
        runs.load_run(folder)
    for suffix in (".json", ".safetensors"):                        # both models new, run.json old
        shutil.copy(other / f"layer{suffix}", folder / f"layer{suffix}")
    with pytest.raises(CheckpointError, match="run.json.*different runs"):
        runs.load_run(folder)
    shutil.copy(other / "run.json", folder / "run.json")
    assert runs.load_run(folder).settings["seed"] == 1


def test_a_folder_from_before_the_records_still_loads(folder):
    edit_json(folder / "run.json", lambda r: r.pop("checkpoints"))
    edit_json(folder / "layer.json", lambda r: r["config"].pop("trained_with"))
    assert runs.load_run(folder).layer.recipe["num_states"] == 3


def test_a_run_is_written_whole_or_not_at_all(words_file, tmp_path, monkeypatch):
    run, target = tiny_run(words_file), tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt                                     # a kill between the backbone and the layer
    monkeypatch.setattr(runs, "save_layer", killed)
    with pytest.raises(KeyboardInterrupt):
        runs.save_run(run, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    runs.save_run(run, target)
    with pytest.raises(FileExistsError, match="already exists"):    # a finished run is never overwritten
        runs.save_run(run, target)
    assert sorted(p.name for p in target.iterdir()) == ["backbone.json", "backbone.safetensors", "layer.json",
                                                         "layer.safetensors", "run.json"]


def test_leftovers_of_killed_writes_are_removed_on_the_next_write(tmp_path):
    stale = tmp_path / ".layer.json.k1ll3d.tmp"
    stale.write_text("half")
    live = tmp_path / ".layer.json.l1ve.tmp"
    live.write_text("being written")
    fd = hold_lock(live)
    try:
        atomic_write_text(tmp_path / "layer.json", "{}")
        assert not stale.exists() and live.exists()                 # a live writer's temporary is kept
    finally:
        os.close(fd)
    other = tmp_path / ".notes.txt.abc.tmp"
    other.write_text("not ours")
    staging = tmp_path / ".run.k1ll3d.tmp"
    staging.mkdir()
    (staging / "backbone.json").write_text("{}")
    atomic_write_folder(tmp_path / "run", lambda f: (f / "x").write_text("1"))
    assert not staging.exists() and other.exists() and (tmp_path / "run" / "x").read_text() == "1"


def test_training_checkpoint_leftovers_are_removed_when_a_run_opens_the_folder(tmp_path):
    from pcdiff.train.distributed import World
    from pcdiff.train.resume import TrainingCheckpoints
    (tmp_path / ".step-000000004.safetensors.k1ll3d.tmp").write_bytes(b"half")
    (tmp_path / "step-000000004.safetensors").write_bytes(b"no json was written")
    (tmp_path / "step-000000002.safetensors").write_bytes(b"kept")
    (tmp_path / "step-000000002.json").write_text("{}")
    TrainingCheckpoints(tmp_path, World(), None, None, None, None, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000002.json", "step-000000002.safetensors"]


# ----------------------------------------------------------------------------- other fields of a checkpoint
@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(config=[1]), "'config'"), (lambda r: r.pop("config"), "'config'"),
    (lambda r: r.update(tensors="../layer.safetensors"), "'tensors'"), (lambda r: r.update(version="1"), "version"),
])
def test_checkpoint_json_fields(edit, message, folder):
    edit_json(folder / "layer.json", edit)
    with pytest.raises(CheckpointError, match=f"layer.json.*{message}"):
        load_layer(folder / "layer.json")


def test_backbone_and_layer_round_trip(tmp_path):
    backbone = TinyDiffusionTransformer(5, 5, 4, dim=8, depth=1, heads=2)
    layer = CoDDLayer.from_structure("chain", 4, 5, num_states=2, adapter="latent_evidence", backbone_hidden_size=8)
    again = load_backbone(save_backbone(backbone, tmp_path / "b"))
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), again.state_dict().values()))
    assert load_layer(save_layer(layer, tmp_path / "l")).config() == layer.config()
    record = json.loads((tmp_path / "l.json").read_text())
    assert "trained_with" not in record["config"]


def test_resume_checks_its_fields(tmp_path):
    from pcdiff.train.resume import _check_fields
    good = {"kind": "codd-training", "train": {}, "step": 2, "seconds": 1.0, "history": [],
            "optimizer": {"param_groups": [], "scalars": {}}}
    _check_fields("ckpt.json", good)
    for field, value in (("step", "2"), ("step", -1), ("history", {}), ("optimizer", {"param_groups": []}),
                         ("train", None), ("seconds", True)):
        with pytest.raises(CheckpointError, match=f"ckpt.json.*config.{field}"):
            _check_fields("ckpt.json", {**good, field: value})


def test_resume_refuses_a_malformed_optimizer_state(tmp_path):
    from pcdiff.train.optim import load_optimizer
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([param])
    groups = optimizer.state_dict()["param_groups"]
    for tensors, scalars, message in (({"optim.x": torch.zeros(3)}, {}, "optim.x|'x'"),
                                      ({"optim.0.exp_avg": torch.zeros(4)}, {}, "shape"),
                                      ({}, {"nonsense": 1}, "nonsense")):
        with pytest.raises(CheckpointError, match=message):
            load_optimizer(optimizer, tensors, {"param_groups": groups, "scalars": scalars})


def test_replace_tensors_keeps_the_hash_check_passing(folder):
    replace_tensors(folder / "layer.json", lambda t: None)
    assert load_layer(folder / "layer.json").recipe["num_states"] == 3
