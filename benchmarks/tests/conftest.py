"""Fixtures the benchmarks' tests share."""
import pytest


@pytest.fixture
def shipped_code_backbone(tmp_path, monkeypatch):
    """A tiny code backbone at ``code_lines.QUICK``'s size, shipped as ``code_lines.SHIPPED_NAME`` for
    the test's duration (written by `pcdiff train-backbone`'s function); its training record."""
    from benchmarks import code_lines
    from pcdiff.app import pretrained
    quick = code_lines.QUICK
    stem = tmp_path / "pretrained" / code_lines.SHIPPED_NAME
    record = pretrained.train_shipped_backbone(stem, progress=False, dataset="python", max_length=code_lines.MAX_LENGTH,
                                               dim=quick.dim, depth=quick.depth, steps=2, eval_every=1, eval_items=8)
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", stem.parent)
    monkeypatch.setattr(pretrained, "SHIPPED", {code_lines.SHIPPED_NAME: record["sha256"]})
    return record


@pytest.fixture
def quick_on_the_shipped_code_backbone(shipped_code_backbone, monkeypatch):
    """``--quick`` runs of code_lines and code_layer_sizes couple to the tiny shipped code backbone, as
    their full runs couple to the real one (their default); its training record."""
    from dataclasses import replace
    from benchmarks import code_layer_sizes, code_lines
    quick = replace(code_lines.QUICK, shipped=code_lines.SHIPPED_NAME)
    monkeypatch.setattr(code_lines, "QUICK", quick)
    monkeypatch.setattr(code_layer_sizes, "QUICK", quick)
    return shipped_code_backbone
