"""The benchmark driver and what every part shares: choosing parts and devices, the command line of
``python -m benchmarks`` (its errors, the command quoted in the report), peak memory, and the
sections written into the markdown report. No timing assertions."""
import pytest
import torch

from benchmarks import PARTS, parse_parts, run_bench
from benchmarks.__main__ import command_line, main, parser
from benchmarks.common import peak_memory
from benchmarks.report import Section, markers, write_sections

PNG = b"\x89PNG\r\n\x1a\n"


def test_parts_parse_from_repeats_and_comma_lists():
    assert parse_parts(None) == list(PARTS) == ["hmm", "layer", "memory", "gpu"]
    assert parse_parts(["gpu", "memory,hmm"]) == ["hmm", "memory", "gpu"]
    for bad in ([","], ["hmm,nope"]):
        with pytest.raises(ValueError, match="--only"):
            parse_parts(bad)


@pytest.mark.parametrize("kwargs, name", [(dict(threads=0), "--threads"), (dict(budget=-1.0), "--budget"),
                                          (dict(device="tpu"), "--device"), (dict(only=["nope"]), "--only")])
def test_bad_arguments_are_refused_by_name_before_anything_runs(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        run_bench(quick=True, out=tmp_path / "b.md", log=lambda *a: None, **kwargs)
    assert not (tmp_path / "b.md").exists()


def test_the_report_quotes_the_command_with_the_options_that_shape_the_numbers():
    args = parser().parse_args(["--quick", "--threads", "1", "--device", "cpu", "--out", "x.md", "--seed", "3"])
    assert command_line(args) == "pcdiff bench --quick --threads 1 --device cpu"
    args = parser().parse_args(["--only", "layer", "--only", "gpu,hmm", "--budget", "2.50"])
    assert command_line(args) == "pcdiff bench --threads 2 --device auto --only layer,gpu,hmm --budget 2.5"


def test_main_ends_a_user_error_with_one_line_and_status_2(tmp_path, capsys):
    assert main(["--quick", "--threads", "0", "--out", str(tmp_path / "b.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pcdiff bench: error: --threads") and len(err.splitlines()) == 1


def test_a_quick_part_writes_its_section_and_restores_the_thread_count(tmp_path):
    pytest.importorskip("matplotlib")
    out, threads, lines = tmp_path / "docs" / "benchmarks.md", torch.get_num_threads(), []
    sections = run_bench(quick=True, threads=1, device="cpu", out=out, only=["memory"], command="cmd", log=lines.append)
    assert torch.get_num_threads() == threads and [s.key for s in sections] == ["memory"]
    text = out.read_text()
    assert "Machine: CPU" in text and "Command: `cmd` (--quick" in text and "decode peak MiB" in text
    assert (tmp_path / "docs" / "benchmarks_memory.png").read_bytes()[:8] == PNG
    assert any("torch threads 1" in line for line in lines)


def test_peak_memory_counts_what_the_call_allocates_and_not_what_was_there():
    before = torch.ones(4 * 2 ** 20)                                     # 16 MiB alive before the call

    def allocate():
        a = torch.ones(2 ** 20)                                          # 4 MiB
        b = torch.ones(2 ** 20)                                          # 4 MiB, both alive: peak 8 MiB
        return float(a.sum() + b.sum() + before[0])
    peak = peak_memory(allocate)
    assert 8 * 2 ** 20 <= peak < 9 * 2 ** 20


def test_a_section_replaces_its_previous_version_and_keeps_the_rest(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nintro\n")
    write_sections(path, [Section("hmm", "HMM", "first")])
    path.write_text(path.read_text() + "\n## Other section\n")
    write_sections(path, [Section("hmm", "HMM", "second")])
    text = path.read_text()
    assert text.count(markers("hmm")[0]) == 1 and text.count(markers("hmm")[1]) == 1
    assert "first" not in text and "second" in text
    assert text.startswith("# Benchmarks\n\nintro\n") and "## Other section" in text


def test_a_placeholder_fills_an_empty_slot_but_never_replaces_a_measurement(tmp_path):
    path = tmp_path / "benchmarks.md"
    write_sections(path, [Section("gpu", "GPU", "owed", placeholder=True)])
    assert "owed" in path.read_text() and path.read_text().startswith("# Benchmarks")
    write_sections(path, [Section("gpu", "GPU", "measured on an H100")])
    write_sections(path, [Section("gpu", "GPU", "owed again", placeholder=True)])
    assert "measured on an H100" in path.read_text() and "owed again" not in path.read_text()


def test_figures_are_saved_next_to_the_report_and_linked_from_it(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "benchmarks.md"
    written = write_sections(path, [Section("layer", "Layer", "rows", [lambda fig: fig.subplots().plot([1, 2])] * 2)])
    pngs = [tmp_path / "benchmarks_layer_1.png", tmp_path / "benchmarks_layer_2.png"]
    assert written == [path, *pngs] and all(p.read_bytes()[:8] == PNG for p in pngs)
    assert "(benchmarks_layer_1.png)" in path.read_text() and sorted(p.name for p in tmp_path.iterdir()) == \
        ["benchmarks.md", "benchmarks_layer_1.png", "benchmarks_layer_2.png"]        # no temporary files left


def test_a_section_names_the_commit_its_code_came_from(tmp_path, monkeypatch):
    import benchmarks.report as report
    path = tmp_path / "results.md"
    monkeypatch.setattr(report, "code_version", lambda: "1a2b3c4 with uncommitted changes")
    write_sections(path, [Section("hmm", "HMM", "rows")])
    assert "rows\n\nCode: commit 1a2b3c4 with uncommitted changes.\n" in path.read_text()
    monkeypatch.setattr(report, "code_version", lambda: None)               # not a git checkout: nothing to name
    write_sections(path, [Section("hmm", "HMM", "rows again")])
    assert "Code: commit" not in path.read_text()


def test_the_code_version_is_this_checkouts_commit():
    import subprocess
    from benchmarks.report import ROOT, code_version
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    version = code_version()
    assert version is None if head.returncode else version.split()[0] == head.stdout.strip()
