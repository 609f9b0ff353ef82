"""The command line under hostile input: every bad option, data file or run folder ends with one line
`pcdiff <command>: error: ...` on stderr naming the option or the file and field, exit status 2, and
(where it can be known) before any training starts."""
import json
import shutil

import pytest
import torch

from pcdiff.app import demo
from pcdiff.app.cli import main

from helpers.checkpoints import edit_json

TINY = ["--max-length", "6", "--backbone-steps", "3", "--layer-steps", "2", "--num-states", "4", "--quiet",
        "--seed", "3"]
WORDS = ["cat", "dog", "bird", "fish", "cow", "owl", "bee", "ant", "eel", "yak", "emu", "ram"]


@pytest.fixture(scope="module")
def words_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("\n".join(WORDS * 2) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, words_file):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--data", str(words_file), "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def no_work(monkeypatch):
    """Any data loading or training fails the test: the error must come before them."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the options were checked")
    monkeypatch.setattr(demo, "load_data", forbidden)
    monkeypatch.setattr(demo, "train_backbone", forbidden)


@pytest.fixture
def no_training(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("training started before the error was found")
    monkeypatch.setattr(demo, "train_backbone", forbidden)


def one_line_error(argv, capsys, *names) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith(f"pcdiff {argv[0]}: error: "), err
    for name in names:
        assert name in err, (name, err)
    return err


@pytest.mark.parametrize("options, names", [
    (["--budget", "nan"], ["--budget", "nan"]),
    (["--budget", "inf"], ["--budget"]),
    (["--budget", "0"], ["--budget"]),
    (["--max-length", "0"], ["--max-length", "0"]),
    (["--max-length", "100000"], ["--max-length"]),
    (["--num-states", "0"], ["--num-states"]),
    (["--hidden", "0"], ["--num-states"]),
    (["--backbone-steps", "0"], ["--backbone-steps"]),
    (["--layer-steps", "-1"], ["--layer-steps"]),
    (["--cache-maskings", "0"], ["--cache-maskings"]),
    (["--seed", "-1"], ["--seed"]),
    (["--seed", str(2 ** 70)], ["--seed"]),
    (["--device", "foo"], ["--device", "foo"]),
    (["--device", "meta"], ["--device", "meta"]),
])
@pytest.mark.parametrize("command", ["train", "demo"])
def test_training_options_are_checked_before_any_work(command, options, names, words_file, no_work, capsys,
                                                      tmp_path):
    argv = [command, "--data", str(words_file), "--out", str(tmp_path / "out"), *TINY, *options]
    one_line_error(argv, capsys, *names)
    assert not (tmp_path / "out").exists()


def test_missing_data_file_and_cuda_without_cuda_are_checked_first(no_work, capsys, tmp_path):
    one_line_error(["train", "--data", str(tmp_path / "nope.txt"), *TINY], capsys, "--data", "nope.txt")
    one_line_error(["train", "--data", str(tmp_path), *TINY], capsys, "--data", "folder")
    if not torch.cuda.is_available():
        one_line_error(["train", "--device", "cuda", *TINY], capsys, "--device", "CUDA")


def test_out_that_is_a_file_or_a_full_folder_is_refused_before_training(words_file, trained, no_work, capsys,
                                                                         tmp_path):
    target = tmp_path / "taken"
    target.write_text("precious")
    one_line_error(["train", "--data", str(words_file), "--out", str(target), *TINY], capsys, "--out", "taken")
    assert target.read_text() == "precious"
    before = sorted(p.name for p in trained.iterdir())
    one_line_error(["train", "--data", str(words_file), "--out", str(trained), *TINY], capsys, "--out",
                   "already exists")
    assert sorted(p.name for p in trained.iterdir()) == before


def test_max_length_zero_with_data_is_not_silently_the_default(words_file, no_work, capsys):
    one_line_error(["train", "--data", str(words_file), *TINY, "--max-length", "0"], capsys, "--max-length")


def test_a_layer_too_big_for_the_limit_is_refused_before_training(words_file, no_training, capsys, tmp_path):
    one_line_error(["train", "--data", str(words_file), "--out", str(tmp_path / "o"), *TINY,
                    "--num-states", "1000000"], capsys, "num_states = 1000000", "limit")


def test_demo_data_without_a_heldout_split_is_refused_before_training(no_training, capsys, tmp_path):
    few = tmp_path / "few.txt"
    few.write_text("cat\ndog\ncat\nowl\n")
    one_line_error(["demo", "--data", str(few), "--out", str(tmp_path / "o"), *TINY], capsys, "--data",
                   "few.txt", "held out")


@pytest.mark.parametrize("argv, names", [
    (["sample", "RUN", "--num", "0"], ["--num"]),
    (["sample", "RUN", "--steps", "0"], ["--steps"]),
    (["sample", "RUN", "--steps", "99"], ["--steps", "block length"]),
    (["sample", "RUN", "--temperature", "nan"], ["--temperature"]),
    (["sample", "RUN", "--temperature", "-1"], ["--temperature"]),
    (["sample", "RUN", "--device", "foo"], ["--device", "foo"]),
    (["sample", "RUN", "--seed", "-2"], ["--seed"]),
    (["eval", "RUN", "--samples", "0"], ["--samples"]),
    (["eval", "RUN", "--device", "cuda:99"], ["--device"]),
    (["convert", "RUN", "out.jpc", "--block-size", "3"], ["--block-size"]),
    (["convert", "RUN", "RUN"], ["folder"]),
])
def test_options_of_the_run_commands(argv, names, trained, capsys):
    argv = [str(trained) if a == "RUN" else a for a in argv]
    if argv[:2] == ["eval", str(trained)] and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    one_line_error(argv, capsys, *names)


def test_eval_report_folder_that_is_a_file(trained, capsys, tmp_path):
    report = tmp_path / "report"
    report.write_text("x")
    one_line_error(["eval", str(trained), "--out", str(report), "--samples", "2"], capsys, "--out", "report")


@pytest.mark.parametrize("edit, names", [
    (lambda r: r.pop("data"), ["run.json", "'data'"]),
    (lambda r: r["data"].pop("source"), ["run.json", "data.source"]),
    (lambda r: r["data"].update(seed="zero"), ["run.json", "data.seed"]),
    (lambda r: r["data"].update(max_length=10 ** 9), ["run.json", "data.max_length"]),
    (lambda r: r.pop("structure"), ["run.json", "structure"]),
    (lambda r: r.update(num_states=99), ["run.json", "num_states", "layer.json"]),
    (lambda r: r["layer"].pop("parameters"), ["run.json", "layer.parameters"]),
])
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_run_json_fields_are_checked_and_named(command, edit, names, run_copy, capsys):
    edit_json(run_copy / "run.json", edit)
    one_line_error([command, str(run_copy)], capsys, *names)


@pytest.mark.parametrize("text, names", [("[1, 2]", ["run.json", "list"]), ("{", ["run.json", "corrupt"]),
                                         ("\"run\"", ["run.json", "str"])])
def test_run_json_that_is_not_an_object(text, names, run_copy, capsys):
    (run_copy / "run.json").write_text(text)
    one_line_error(["sample", str(run_copy)], capsys, *names)


def test_a_run_whose_data_file_vanished_names_the_field(tmp_path, words_file, capsys):
    data = tmp_path / "mine.txt"
    shutil.copy(words_file, data)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    data.unlink()
    one_line_error(["sample", str(out)], capsys, "run.json", "'data'", "mine.txt")


def test_a_trained_run_still_samples(trained, capsys):
    assert main(["sample", str(trained), "--num", "3", "--steps", "2"]) == 0
    assert len([line for line in capsys.readouterr().out.splitlines() if line.strip()]) == 3


def test_checking_every_option_left_the_old_settings_alone(trained):
    settings = json.loads((trained / "run.json").read_text())
    assert settings["data"]["max_length"] == 6 and settings["num_states"] == 4
    assert set(settings["checkpoints"]) == {"backbone_sha256", "layer_sha256"}
