"""The shipped backbone: the plateau measure is exact, the training record is complete, and a shipped
checkpoint is used only for its own data split and only with its pinned SHA-256."""
import json

import pytest
import torch
import torch.nn.functional as F

from pcdiff.app import pretrained
from pcdiff.app.demo import BACKBONE_SIZE, prepare_run, train_prepared
from pcdiff.backbones import TinyDiffusionTransformer
from pcdiff.train.checkpoint import CheckpointError
from pcdiff.train.plateau import one_token_nll, plateau_change

SMALL = dict(steps=4, dim=16, depth=1, eval_every=2, eval_items=8)


@pytest.mark.parametrize("noise", ["mask", "uniform"])
def test_one_token_nll_is_the_mean_over_positions_masked_one_at_a_time(noise):
    torch.manual_seed(0)
    backbone = TinyDiffusionTransformer(7, 6 if noise == "mask" else None, 5, dim=16, depth=1, noise=noise)
    x0 = torch.randint(0, 6, (3, 5))
    if noise == "uniform":          # the corrupting token is a seeded draw: compare with the mask-free form
        value = one_token_nll(backbone, x0, batch_size=4)
        assert value == pytest.approx(one_token_nll(backbone, x0, batch_size=1000), rel=1e-6)  # nor the draws
        return
    by_hand = []
    for row in x0:
        for i in range(5):
            noisy = row.clone()
            noisy[i] = 6
            logits = backbone(noisy[None]).logits[0, i]
            by_hand.append(F.cross_entropy(logits[None], row[i:i + 1]).item())
    assert one_token_nll(backbone, x0, batch_size=4) == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)


def test_plateau_change_compares_the_end_with_the_record_at_four_fifths():
    history = [{"steps": s, "nll": v} for s, v in [(100, 3.0), (400, 2.2), (800, 2.02), (1000, 2.0)]]
    assert plateau_change(history, "nll") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="two records"):
        plateau_change(history[:1], "nll")


@pytest.fixture(scope="module")
def shipped_dir(tmp_path_factory):
    """A package folder holding one small shipped backbone, as `pcdiff train-backbone` writes it."""
    folder = tmp_path_factory.mktemp("pretrained")
    record = pretrained.train_shipped_backbone(folder / "words-small", progress=False, **SMALL)
    return folder, record


def test_the_training_record_holds_every_evaluation_and_the_plateau_check(shipped_dir):
    folder, record = shipped_dir
    on_disk = json.loads((folder / "words-small.training.json").read_text())
    assert on_disk == json.loads(json.dumps(record))
    assert [r["steps"] for r in record["history"]] == [2, 4]
    assert set(record["plateau"]) == {"heldout_1tok", "train_1tok"}
    assert record["plateau_reached"] == all(v < 0.01 for v in record["plateau"].values())
    assert record["data"] == {"source": "words", "seed": 0, "block_length": 13}


def test_the_same_seed_trains_the_same_checkpoint(shipped_dir, tmp_path):
    again = pretrained.train_shipped_backbone(tmp_path / "again", progress=False, **SMALL)
    assert again["sha256"] == shipped_dir[1]["sha256"]


def test_a_run_uses_the_shipped_backbone_of_its_split_only(shipped_dir, monkeypatch):
    folder, record = shipped_dir
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", folder)
    monkeypatch.setattr(pretrained, "SHIPPED", {"words-small": record["sha256"]})
    sizes = dict(num_states=4, backbone_dim=16, backbone_depth=1)
    shipped = prepare_run("words", seed=0, backbone="shipped", **sizes)
    fresh = prepare_run("words", seed=0, backbone="train", **sizes)
    assert shipped.settings["backbone"]["shipped"] == "words-small"
    assert not torch.equal(shipped.backbone.head.weight, fresh.backbone.head.weight)
    for a, b in zip(shipped.layer.parameters(), fresh.layer.parameters()):   # the layer starts the same
        assert torch.equal(a, b)
    train_prepared(shipped, layer_steps=1, progress=False)                  # no backbone training
    assert shipped.settings["backbone"]["steps"] == SMALL["steps"]
    assert "shipped" not in prepare_run("words", seed=1, backbone="shipped", **sizes).settings.get("backbone", {})
    other_seed = prepare_run("words", seed=1, data_seed=0, backbone="shipped", **sizes)   # same split, new seed
    assert other_seed.settings["backbone"]["shipped"] == "words-small" and other_seed.settings["data"]["seed"] == 0
    assert "shipped" not in prepare_run("words", seed=0, backbone="shipped", num_states=4, backbone_dim=32,
                                        backbone_depth=1).settings.get("backbone", {})


def test_a_shipped_backbone_whose_hash_is_not_the_pinned_one_is_refused(shipped_dir, monkeypatch):
    folder, _ = shipped_dir
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", folder)
    monkeypatch.setattr(pretrained, "SHIPPED", {"words-small": "0" * 64})
    with pytest.raises(CheckpointError, match="pinned SHA-256"):
        prepare_run("words", seed=0, backbone="shipped", num_states=4, backbone_dim=16, backbone_depth=1)


def test_a_continued_checkpoint_starts_from_its_parent_and_counts_its_steps(shipped_dir, tmp_path):
    folder, parent = shipped_dir
    stem = str(folder / "words-small")
    child = pretrained.train_shipped_backbone(tmp_path / "child", progress=False, **{**SMALL, "lr": 1e-3}, init=stem)
    assert child["init"] == {"checkpoint": "words-small", "sha256": parent["sha256"], "total_steps": 4}
    assert child["total_steps"] == 8 and child["sha256"] != parent["sha256"]
    # no training steps at all would leave the parent's weights: the first evaluation starts from them
    start = pretrained.train_shipped_backbone(tmp_path / "zero-lr", progress=False,
                                              **{**SMALL, "steps": 2, "eval_every": 1, "lr": 1e-12}, init=stem)
    assert start["history"][0]["heldout_1tok"] == pytest.approx(parent["history"][-1]["heldout_1tok"], abs=1e-6)
    with pytest.raises(ValueError, match="dim = 16"):
        pretrained.train_shipped_backbone(tmp_path / "wide", progress=False, **{**SMALL, "dim": 32}, init=stem)
    with pytest.raises(ValueError, match="max_length = None"):
        pretrained.train_shipped_backbone(tmp_path / "short", progress=False, **SMALL, max_length=5, init=stem)
    broken = tmp_path / "broken"
    (tmp_path / "broken.training.json").write_text('{"settings": []}')
    with pytest.raises(CheckpointError, match="'settings' object"):
        pretrained.train_shipped_backbone(tmp_path / "b2", progress=False, **SMALL, init=str(broken))
    with pytest.raises(ValueError, match="no training record"):
        pretrained.train_shipped_backbone(tmp_path / "lost", progress=False, **SMALL, init=str(tmp_path / "none"))


def test_unknown_settings_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="unknown settings \\['layers'\\]"):
        pretrained.train_shipped_backbone(tmp_path / "x", layers=3)


def test_the_command_line_names_bad_pretraining_and_split_options(capsys):
    from pcdiff.app.cli import main
    assert main(["train-backbone", "--out", "x", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["train-backbone", "--out", "x", "--dropout", "1.5"]) == 2
    assert "--dropout" in capsys.readouterr().err
    assert main(["train-backbone", "--out", "x", "--init", "no/such/stem"]) == 2
    assert "--init no/such/stem" in capsys.readouterr().err
    for option in ("--dim", "--depth", "--max-length"):
        assert main(["train-backbone", "--out", "x", option, "0"]) == 2
        assert option in capsys.readouterr().err
    assert main(["demo", "--data-seed", "-1"]) == 2
    assert "--data-seed" in capsys.readouterr().err
    for option in ("--backbone-dim", "--backbone-depth"):
        assert main(["demo", option, "0"]) == 2
        assert option in capsys.readouterr().err


def test_a_backbone_of_another_size_and_block_is_shipped_for_that_split_alone(tmp_path, monkeypatch):
    from pcdiff.app.cli import main
    stem = tmp_path / "python-small"
    assert main(["train-backbone", "--out", str(stem), "--dataset", "python", "--max-length", "8", "--dim", "16",
                 "--depth", "1", "--steps", "2", "--eval-every", "1", "--elbo-draw", "count", "--quiet"]) == 0
    record = json.loads((tmp_path / "python-small.training.json").read_text())
    assert record["data"] == {"source": "python", "seed": 0, "max_length": 8, "block_length": 9}
    assert record["settings"]["elbo_draw"] == "count"
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr(pretrained, "SHIPPED", {"python-small": record["sha256"]})
    sizes = dict(num_states=4, backbone_dim=16, backbone_depth=1, backbone="shipped")
    assert prepare_run("python", max_length=8, seed=0, **sizes).settings["backbone"]["shipped"] == "python-small"
    assert "shipped" not in prepare_run("python", max_length=9, seed=0, **sizes).settings.get("backbone", {})
    # a run that names no size takes the shipped one's; a new backbone is BACKBONE_SIZE
    unsized = prepare_run("python", max_length=8, seed=0, num_states=4, backbone="shipped")
    assert unsized.settings["backbone"]["shipped"] == "python-small"
    assert (unsized.backbone.config["dim"], unsized.backbone.config["depth"]) == (16, 1)
    fresh = prepare_run("python", max_length=8, seed=0, num_states=4, backbone="train")
    assert (fresh.backbone.config["dim"], fresh.backbone.config["depth"]) == BACKBONE_SIZE


def test_python_lines_by_default_get_the_shipped_code_backbone():
    run = prepare_run("python", seed=0, num_states=4, backbone="shipped")
    assert run.data.block_length == 32 and run.settings["data"]["max_length"] == 31
    assert run.settings["backbone"]["shipped"] == "python-mask"
    assert prepare_run("python", seed=0, num_states=4, backbone="shipped", backbone_depth=4
                       ).settings.get("backbone", {}).get("shipped") is None


def test_every_shipped_checkpoint_is_in_the_package_with_its_pinned_hash_and_reached_a_plateau():
    from pcdiff.train.checkpoint import checkpoint_record
    assert pretrained.SHIPPED
    for name, sha256 in pretrained.SHIPPED.items():
        record = json.loads((pretrained.SHIPPED_DIR / f"{name}.training.json").read_text())
        assert checkpoint_record(pretrained.SHIPPED_DIR / name)["sha256"] == record["sha256"] == sha256
        assert record["plateau_reached"] and max(record["plateau"].values()) < pretrained.PLATEAU_TOLERANCE


def test_a_python_run_of_pcdiff_0_2_reloads_its_own_blocks():
    from pcdiff.app.runs import data_spec, load_data
    assert data_spec("python", None, 0) == {"source": "python", "seed": 0, "max_length": 31}
    assert load_data({"source": "python", "seed": 0}).block_length == 33      # 0.2 recorded no max_length
    assert data_spec("words", None, 0) == {"source": "words", "seed": 0}


def test_a_run_couples_to_a_checkpoint_trained_for_its_split(shipped_dir, tmp_path, capsys):
    folder, record = shipped_dir
    stem = folder / "words-small"
    run = prepare_run("words", seed=3, data_seed=0, num_states=4, backbone=stem)
    assert run.settings["backbone"]["pretrained"] == str(stem) and "shipped" not in run.settings["backbone"]
    assert run.settings["backbone"]["sha256"] == record["sha256"] and run.backbone.config["dim"] == 16
    train_prepared(run, layer_steps=1, progress=False)                     # the backbone is not trained again
    assert run.settings["backbone"]["steps"] == SMALL["steps"]
    with pytest.raises(ValueError, match=r"seed = 0 \(the run's: 1\)"):
        prepare_run("words", seed=1, num_states=4, backbone=stem)
    with pytest.raises(ValueError, match=r"dim = 16 \(the run's: 32\)"):
        prepare_run("words", seed=0, num_states=4, backbone=stem, backbone_dim=32)
    with pytest.raises(ValueError, match="no training record"):
        prepare_run("words", seed=0, num_states=4, backbone=tmp_path / "none")
    from pcdiff.app.cli import main
    assert main(["demo", "--backbone-checkpoint", str(tmp_path / "none")]) == 2
    assert "--backbone-checkpoint" in capsys.readouterr().err
    assert main(["demo", "--backbone-checkpoint", str(stem), "--retrain-backbone"]) == 2
    assert "give one or the other" in capsys.readouterr().err


def test_a_checkpoint_whose_tensors_are_not_its_records_is_refused(shipped_dir, tmp_path):
    folder, record = shipped_dir
    for suffix in (".json", ".safetensors"):
        (tmp_path / f"copy{suffix}").write_bytes((folder / f"words-small{suffix}").read_bytes())
    changed = {**record, "sha256": "0" * 64}
    (tmp_path / "copy.training.json").write_text(json.dumps(changed))
    with pytest.raises(CheckpointError, match="its training record says"):
        prepare_run("words", seed=0, num_states=4, backbone=tmp_path / "copy")
    (tmp_path / "copy.training.json").write_text(json.dumps({**record, "history": []}))
    with pytest.raises(CheckpointError, match="'history'"):
        prepare_run("words", seed=0, num_states=4, backbone=tmp_path / "copy")
