"""The command line end to end on a tiny budget: demo, train → sample → eval, convert, and errors."""
import json
import subprocess
import sys

import pytest

from pcdiff.app.cli import main
from pcdiff.app.defaults import LAYER_DRAW, LAYER_MASKINGS

TINY = ["--max-length", "6", "--backbone-steps", "8", "--layer-steps", "4", "--hidden", "8", "--quiet", "--seed", "3"]


@pytest.fixture(scope="module")
def words_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "words.txt"
    words = ["cat", "dog", "bird", "fish", "cow", "owl", "bee", "ant", "eel", "yak", "emu", "ram"] * 3
    path.write_text("\n".join(words) + "\n")
    return path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, words_file):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--data", str(words_file), "--out", str(out), "--samples", "40", "--control-items", "16",
                 *TINY]) == 0
    return out


def without_timing(value):
    """A results dict without its wall-clock fields (every key naming seconds, and the timing table)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if "seconds" not in k and k != "timing"}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def test_the_same_seed_gives_the_same_results_timings_aside(words_file, tmp_path):
    """Training runs for steps (never seconds) and every draw is seeded: the demo's pipeline (prepare →
    train → evaluate → report) twice on one machine gives one results.json but for how long things took."""
    from pcdiff.app.controls import ControlSettings
    from pcdiff.app.demo import evaluate_run, prepare_run, train_prepared, write_report
    texts = []
    for attempt in ("first", "second"):
        run = prepare_run(None, str(words_file), max_length=6, seed=5, num_states=4, backbone_dim=16,
                          backbone_depth=1)
        train_prepared(run, backbone_steps=6, layer_steps=3, progress=False)
        controls = ControlSettings(items=10, fit_epochs=1, seed=5)
        write_report(evaluate_run(run, seed=5, num_samples=12, progress=False, controls=controls), tmp_path / attempt)
        texts.append((tmp_path / attempt / "results.json").read_text())
    first, second = (json.loads(text) for text in texts)
    assert "seconds" in texts[0] and first["settings"]["backbone"]["steps"] == 6   # timings there to drop
    # compared as JSON text: NaN (a gap closed over no gap) equals itself there
    assert json.dumps(without_timing(first), sort_keys=True) == json.dumps(without_timing(second), sort_keys=True)


def test_a_demo_on_python_lines_judges_them_by_the_tokenizer(tmp_path):
    out = tmp_path / "run"
    assert main(["demo", "--dataset", "python", "--out", str(out), "--samples", "8",
                 "--control-items", "4", "--backbone-dim", "16", "--backbone-depth", "1", *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["backbone"]["config"]["dim"] == 16 and "shipped" not in results["settings"]["backbone"]
    for cell in results["generation"]["codd"].values():
        assert 0.0 <= cell["tokenizable"] <= 1.0
    assert 0.5 < results["heldout_lines"]["tokenizable"] <= 1.0
    report = (out / "results.md").read_text()
    assert "## Generated lines judged by Python's tokenizer" in report and "Held-out lines: tokenizable" in report


def test_demo_writes_results_report_and_plots(demo_run):
    results = json.loads((demo_run / "results.json").read_text())
    fractions = {"0.25", "0.5", "0.75", "1.0"}
    for method in ("one_step", "sequential", "codd"):
        assert set(results["perplexity"][method]) == fractions
        assert all(v > 1.0 for v in results["perplexity"][method].values())
    assert set(results["gap_closed"]) == fractions
    block = results["settings"]["block_length"]
    assert set(results["generation"]["codd"]) == {str(s) for s in {1, 2, 3, 4, block}}
    for mode in ("factorized", "codd"):
        for cell in results["generation"][mode].values():
            assert 0.0 <= cell["valid"] <= 1.0 and 0.0 <= cell["malformed"] <= 1.0
            assert cell["distinct_valid"] <= 40
        assert set(results["infill"][mode]) == {"0.25", "0.5", "0.75"}
    assert results["timing"]["overhead_ratio"] > 0
    controls = results["controls"]
    assert controls["sets"]["in_distribution"]["items"] == 16 and controls["settings"]["fit_items"] == 640
    assert set(controls["codd_gain_one_token"]) == {"in_distribution", "unseen_types"}
    assert results["settings"]["backbone"]["steps"] == 8
    layer = results["settings"]["layer"]                 # the demo's recipe, recorded and in the report's header
    assert (layer["steps"], layer["elbo_draw"], layer["cache_maskings"]) == (4, LAYER_DRAW, LAYER_MASKINGS)
    assert "final_loss" in json.dumps(results["settings"]) or "train_loss" in json.dumps(results["settings"])
    report = (demo_run / "results.md").read_text()
    assert f"maskings drawn by {LAYER_DRAW} ({LAYER_MASKINGS} cached per item)" in report.splitlines()[2]
    assert report.startswith("# pcdiff demo") and report.index("## Perplexity") < report.index("## Controls")
    for plot in ("perplexity.png", "generation.png", "infill.png"):
        assert (demo_run / plot).stat().st_size > 1000


def test_sample_and_eval_read_the_run_back(demo_run, capsys, tmp_path):
    assert main(["sample", str(demo_run), "--num", "5", "--steps", "2", "--seed", "1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 5 and all(line.split()[-1] in {"real", "new", "malformed"} for line in lines)
    assert main(["sample", str(demo_run), "--num", "5", "--steps", "2", "--seed", "1"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.strip()] == lines   # seeded
    assert main(["sample", str(demo_run), "--prompt", "ca"]) == 2                             # hf runs only
    assert "--prompt needs a run over a Hugging Face model" in capsys.readouterr().err
    assert main(["eval", str(demo_run), "--out", str(tmp_path), "--samples", "20", "--control-items", "8",
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["evaluation"]["num_samples"] == 20


def test_convert_exports_the_trained_circuit(demo_run, tmp_path):
    import structures
    target = tmp_path / "layer.jpc"
    assert main(["convert", str(demo_run), str(target)]) == 0
    circuit = structures.load_jpc(target)
    assert circuit.num_vars == json.loads((demo_run / "run.json").read_text())["block_length"]
    again = tmp_path / "again.jpc"
    assert main(["convert", str(target), str(again)]) == 0
    assert structures.load_jpc(again).num_parameters == circuit.num_parameters


@pytest.mark.parametrize("argv, message", [
    (["demo", "--data", "/no/such/file.txt"], "/no/such/file.txt"),
    (["sample", "/no/such/run"], "/no/such/run"),
    (["convert", "/no/such.jpc", "out.jpc"], "/no/such.jpc"),
])
def test_user_errors_are_one_line(argv, message, capsys):
    assert main(argv + (["--quiet"] if argv[0] == "demo" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and "Traceback" not in err


def test_empty_and_too_long_data_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["train", "--data", str(empty), *TINY]) == 2
    assert "empty.txt" in capsys.readouterr().err
    long = tmp_path / "long.txt"
    long.write_text("short\n" + "x" * 500 + "\n")
    code = main(["train", "--data", str(long), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "long.txt" in err


def test_unknown_option_and_help_exit_cleanly():
    result = subprocess.run([sys.executable, "-m", "pcdiff", "demo", "--no-such-option"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
    result = subprocess.run([sys.executable, "-m", "pcdiff", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout


def test_the_commands_keep_freed_heap_pages_on_glibc(monkeypatch, tmp_path):
    import platform

    from pcdiff.app import cli
    from pcdiff.app.allocator import keep_heap_pages
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_heap_pages() is on_glibc
    calls = []
    monkeypatch.setattr(cli, "keep_heap_pages", lambda: calls.append(True))
    assert cli.main(["convert", str(tmp_path / "missing.jpc"), str(tmp_path / "out.jpc")]) == 2
    assert calls == [True]


@pytest.mark.parametrize("flags, expected", [
    (["--dataset", "python"], (64, "count", 16)),             # the recipe chosen for Python lines
    (["--dataset", "words"], (128, "count", 16)),
    (["--dataset", "python", "--num-states", "32", "--layer-draw", "time"], (32, "time", 16)),   # a flag wins
])
def test_layer_options_left_unset_take_the_datas_recipe(flags, expected, tmp_path):
    from pcdiff.app.options import check_options
    from pcdiff.app.parser import build_parser
    args = build_parser().parse_args(["demo", *flags, "--out", str(tmp_path / "run")])
    check_options(args)
    assert (args.num_states, args.layer_draw, args.cache_maskings) == expected


def test_a_users_file_takes_the_words_recipe(tmp_path):
    from pcdiff.app.defaults import layer_recipe
    assert layer_recipe(None) == layer_recipe("words") != layer_recipe("python")


def test_a_dependence_only_demo_leaves_one_masked_token_to_the_backbone(tmp_path, words_file):
    out = tmp_path / "run"
    assert main(["demo", "--data", str(words_file), "--out", str(out), "--samples", "8", "--control-items", "6",
                 "--dependence-only", *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["dependence_only"] is True
    gains = results["controls"]["codd_gain_one_token"]
    assert gains and all(abs(g["mean"]) < 1e-5 for g in gains.values())       # CoDD is the backbone there
    assert "(dependence only: its own conditionals divided out)" in (out / "results.md").read_text()
