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
