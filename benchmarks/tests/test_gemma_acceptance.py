"""The DiffusionGemma acceptance benchmark (``python -m benchmarks.gemma_acceptance --quick``) trains its tiny
model and layer, judges every decoder at every bound and writes its section between markers, keeping the rest
of the file; its trainable view of the model is the backbone the decoder reads."""
import pytest
import torch

pytest.importorskip("transformers")
from benchmarks import gemma_acceptance as bench  # noqa: E402
from benchmarks.report import markers  # noqa: E402
from pcdiff.app.hfrun import CanvasAfterContext  # noqa: E402
from pcdiff.backbones import DiffusionGemmaBackbone  # noqa: E402


def test_quick_run_writes_its_section(tmp_path, capsys):
    out = tmp_path / "backbones.md"
    out.write_text("# Backbones\n\nwritten by hand\n")
    assert bench.main(["--quick", "--quiet", "--out", str(out)]) == 0
    text = out.read_text()
    begin, end = markers("gemma-acceptance")
    assert text.count(begin) == 1 and text.count(end) == 1 and "written by hand" in text
    section = text.split(begin)[1].split(end)[0]
    assert "Command: `python -m benchmarks.gemma_acceptance --quick --quiet --out" in section
    bounds = bench.SIZES["quick"]["bounds"]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "±" in line]
    assert [(float(r[0][2:]), r[1]) for r in rows] == [(b, d) for b in bounds for d, _ in bench.DECODERS]
    for row in rows:
        valid, se = (float(x) for x in row[2].split(" ± "))
        calls = float(row[4].split(" ± ")[0])
        most = bench.MODEL_STEPS if f"{bench.MODEL_STEPS} steps" in row[1] else 5   # else steps = the canvas
        assert 0 <= valid <= 1 and se >= 0 and 1 <= calls <= most
    assert section.count("* bound ") == len(bounds) and section.count("* valid ") == len(bounds)
    assert (tmp_path / "backbones_gemma-acceptance.png").stat().st_size > 0
    assert "perfect factorized model" in section and "valid with probability 0.094" in section
    capsys.readouterr()


def test_trainable_view_in_eval_mode_is_the_decoders_backbone():
    model = bench.build_model(vocab=5, canvas=5, hidden=32, layers=2).eval()
    view = bench.TrainableCanvas(model, context_id=4).eval()
    tokens = torch.randint(0, 5, (3, 5), generator=torch.Generator().manual_seed(0))
    reference = CanvasAfterContext(DiffusionGemmaBackbone(model), 4)(tokens)
    out = view(tokens)
    assert torch.allclose(out.logits, reference.logits, atol=1e-5)
    assert torch.allclose(out.hidden, reference.hidden, atol=1e-5)
    view.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trained = view(tokens).logits
    assert trained.requires_grad and not torch.allclose(trained, reference.logits)   # self-conditioned rows


def test_bad_options_end_with_one_line_and_status_2(capsys):
    assert bench.main(["--samples", "0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_calls_to_reach_interpolates_on_the_frontier():
    points = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.9)]
    assert bench.calls_to_reach(points, 0.3) == 1.0
    assert abs(bench.calls_to_reach(points, 0.7) - 2.0) < 1e-12        # between (1, 0.5) and (3, 0.9)
    assert bench.calls_to_reach(points, 0.95) is None
