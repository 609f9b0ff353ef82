"""Training under torch.distributed: two CPU processes (gloo, launched by torchrun) train the same layer
as one process with the same global batch and seed; one checkpoint; resume; a shared stopping step;
the sharding helpers; `pcdiff train` under torchrun.

Run as a script (``torchrun --nproc_per_node 2 tests/pcdiff/test_distributed.py OUT``) this file is the worker.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from pcdiff.backbones import TinyDiffusionTransformer
from pcdiff.train.checkpoint import load_checkpoint
from pcdiff.data import ItemData, Vocabulary
from pcdiff.train.distributed import World, world
from pcdiff.codd import CoDDLayer
from pcdiff.train import train_codd_layer

WORDS = ["cat", "dog", "bird", "fish", "cow", "horse", "pig", "goat", "owl", "bee", "ant", "emu"]
COMMON = dict(eval_every=None, eval_items=3, lr=0.05, cache_dtype=torch.float64, progress=False)
#: name -> training arguments; every one ends with a single checkpoint in its own folder
SCENARIOS = {
    "cached": dict(steps=4, batch_size=7),                          # 7 rows over 2 ranks: uneven parts
    "uncached": dict(steps=4, batch_size=7, cache_backbone=False),
    "joint": dict(steps=3, batch_size=6, freeze_backbone=False),    # the backbone in DDP as well
    "one_row": dict(steps=3, batch_size=1),                         # one rank has nothing: the stand-in row
    "resume": dict(steps=4, batch_size=7, resume=True),             # from a 2-step single-process checkpoint
}
REFERENCE = {"resume": "cached"}                                    # resuming must land where a straight run does


def make_data() -> ItemData:
    weights = [float(len(w)) for w in WORDS[:-3]]                   # frequency-weighted draws
    return ItemData(WORDS[:-3], WORDS[-3:], Vocabulary.from_items(WORDS), block_length=6, train_weights=weights)


def train(name: str, folder: pathlib.Path, **overrides):
    """One scenario, float64 throughout so that only the order of sums can differ between runs."""
    data = make_data()
    torch.manual_seed(0)
    backbone = TinyDiffusionTransformer(data.vocab.size, data.vocab.mask_id, data.block_length, dim=8, depth=1,
                                        heads=2).double()
    layer = CoDDLayer.from_structure("hmm", 6, data.vocab.size, num_states=3, adapter="low_rank",
                                     backbone_hidden_size=8, mask_id=data.vocab.mask_id, dtype=torch.float64)
    settings = {**COMMON, **SCENARIOS[name], **overrides}
    result = train_codd_layer(layer, backbone, data, checkpoint_dir=folder / name, **settings)
    return layer, backbone, result


def worker(out: pathlib.Path) -> None:
    from pcdiff.train import distributed
    torch.set_num_threads(1)
    with distributed.session("cpu") as (here, _):
        assert here.size == 2 and world() == here
        for name in SCENARIOS:
            layer, backbone, result = train(name, out / "ddp")
            if here.is_main:
                torch.save({"backbone": backbone.state_dict(), "result": result}, out / "ddp" / f"{name}.pt")
        # every rank ends at the same step holding the same layer
        layer, _, result = train("uncached", out / "ranks", steps=3)
        torch.save({"steps": result["steps"], "layer": layer.state_dict()}, out / "ranks" / f"rank{here.rank}.pt")


# ----------------------------------------------------------------------------- helpers, no processes
def test_split_tiles_the_batch_in_order_and_owners_partition_keys():
    for count in (0, 1, 5, 7, 8):
        for size in (1, 2, 3, 5):
            parts = [World(rank, size).split(count) for rank in range(size)]
            assert [i for p in parts for i in range(count)[p]] == list(range(count))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
            keys = torch.arange(count)
            owned = [World(rank, size).owns(keys) for rank in range(size)]
            assert torch.equal(sum(o.long() for o in owned), torch.ones(count, dtype=torch.long))
            for rank, mask in enumerate(owned):
                assert World(rank, size).shard_size(count) == int(mask.sum())
                assert torch.equal(keys[mask] // size, torch.arange(int(mask.sum())))   # dense local indices
    with pytest.raises(ValueError, match="rank must be in"):
        World(2, 2)
    with pytest.raises(ValueError, match="count must be >= 0"):
        World().split(-1)


def test_a_world_of_one_is_the_identity():
    alone = world()
    assert alone == World() and alone.is_main
    module = torch.nn.Linear(2, 2)
    assert alone.wrap(module) is module
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(alone.sum(values), values)
    assert alone.gather("x") == ["x"]


def test_a_half_set_up_launch_is_refused_or_warned_about(monkeypatch, tmp_path):
    from pcdiff.train import distributed
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        distributed.init("cpu")
    with pytest.warns(UserWarning, match="no process group is running"):
        train("cached", tmp_path, steps=1)


# ----------------------------------------------------------------------------- two processes
def torchrun(*args, cwd=None) -> subprocess.CompletedProcess:
    """2 processes on this machine; --standalone lets the launcher pick a free port itself."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}   # a crash shows its Python stack
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and TEARDOWN_CRASH in done.stderr:
        # A rare abort inside torch's C++ runtime as a worker exits (about 1 run in 30 on a 2-core
        # machine): launch once more. Any other failure, or a second abort, fails the test.
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    return done


TEARDOWN_CRASH = "terminate called without an active exception"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Single-process references, then the same scenarios in 2 processes."""
    out = tmp_path_factory.mktemp("distributed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train("cached", out / "ddp", steps=2, resume=False)
        (out / "ddp" / "cached").rename(out / "ddp" / "resume")     # the checkpoint the 2 processes resume
        single = {name: train(name, out / "single") for name in SCENARIOS if name not in REFERENCE}
    finally:
        torch.set_num_threads(threads)
    torchrun(__file__, str(out))
    return out, single


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_processes_train_the_layer_one_process_trains(runs, name):
    out, single = runs
    layer, backbone, result = single[REFERENCE.get(name, name)]
    tensors, config = load_checkpoint(out / "ddp" / name)
    assert config["step"] == SCENARIOS[name]["steps"]
    for key, value in layer.state_dict().items():
        torch.testing.assert_close(tensors[f"layer.{key}"], value, rtol=1e-9, atol=1e-12)
    assert any(not torch.equal(v, tensors[f"layer.{k}"]) for k, v in   # the layer did move
               CoDDLayer.from_structure("hmm", 6, layer.vocab_size, num_states=3, adapter="low_rank",
                                        backbone_hidden_size=8, dtype=torch.float64).state_dict().items())
    saved = torch.load(out / "ddp" / f"{name}.pt")
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(saved["backbone"][key], value, rtol=1e-9, atol=1e-12)
    assert saved["result"]["world_size"] == 2 and result["world_size"] == 1
    # the factorized column is computed in float32 (as in training), so only to float32 precision
    for key, rel in (("codd", 1e-9), ("factorized", 1e-6)):
        assert saved["result"]["heldout"][key] == pytest.approx(result["heldout"][key], rel=rel)
    if name not in REFERENCE:                       # after a resume it averages only the resumed steps
        assert saved["result"]["train_loss"] == pytest.approx(result["train_loss"], rel=1e-9)


def test_only_rank_0_writes_one_checkpoint_per_run(runs):
    out, _ = runs
    for name in SCENARIOS:
        written = sorted(p.name for p in (out / "ddp" / name).iterdir())
        steps = [2, 4] if name == "resume" else [SCENARIOS[name]["steps"]]
        assert written == [f"step-{s:09d}.{ext}" for s in steps for ext in ("json", "safetensors")], written


def test_every_rank_stops_at_the_same_step_with_the_same_layer(runs):
    out, _ = runs
    ranks = [torch.load(out / "ranks" / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 3
    for key, value in ranks[0]["layer"].items():
        assert torch.equal(value, ranks[1]["layer"][key])
    assert load_checkpoint(out / "ranks" / "uncached")[1]["step"] == ranks[0]["steps"]


def test_pcdiff_train_under_torchrun_writes_one_run(tmp_path):
    from pcdiff.app.cli import main
    from pcdiff.app.runs import load_run
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS * 2) + "\n")
    options = ["--data", str(words), "--max-length", "5", "--backbone-steps", "3", "--layer-steps", "3",
               "--num-states", "4", "--seed", "1"]
    done = torchrun("--tee", "3", "-m", "pcdiff", "train", *options, "--out", str(tmp_path / "ddp"), cwd=tmp_path)
    assert done.stdout.count("saved run to") == 1 and "[default0]:train CoDD layer" in done.stderr
    assert "[default1]:" not in done.stdout and "[default1]:train" not in done.stderr       # rank 1 stays quiet
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "backbone.json", "backbone.safetensors", "layer.json", "layer.safetensors", "run.json"]
    settings = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert settings["layer"]["world_size"] == 2 and settings["layer"]["steps"] == 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *options, "--quiet", "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    ddp, one = load_run(tmp_path / "ddp"), load_run(tmp_path / "one")
    for (key, a), b in zip(ddp.layer.state_dict().items(), one.layer.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)


if __name__ == "__main__":
    worker(pathlib.Path(sys.argv[1]))
