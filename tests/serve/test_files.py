"""Only files inside the served folder are readable: ``..``, absolute names, links out, hidden entries refused."""

from __future__ import annotations

import os

import pytest

from kuosan.serve.files import safe_file


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "run"
    (root / "checkpoints").mkdir(parents=True)
    (root / "samples.png").write_bytes(b"png")
    (root / "checkpoints" / "state.json").write_text("{}")
    (root / ".tmp-samples.png").write_bytes(b"half")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "leak.txt")  # a link pointing out of the folder
    os.symlink(root / "samples.png", root / "alias.png")  # a link that stays inside
    os.symlink(tmp_path, root / "up")  # a folder link out
    return root


def test_files_inside_are_found(tree):
    assert safe_file(tree, "samples.png") == (tree / "samples.png").resolve()
    assert safe_file(tree, "checkpoints/state.json") == (tree / "checkpoints" / "state.json").resolve()
    assert safe_file(tree, "alias.png") == (tree / "samples.png").resolve()


@pytest.mark.parametrize("name", ["../secret.txt", "checkpoints/../../secret.txt", "leak.txt", "up/secret.txt",
                                  "", ".", "checkpoints", "missing.png", ".tmp-samples.png", "a\x00b",
                                  "..\\secret.txt", "x" * 2000])
def test_outside_hidden_or_not_a_file_is_refused(tree, name):
    assert safe_file(tree, name) is None


def test_absolute_names_are_refused(tree, tmp_path):
    assert safe_file(tree, str(tmp_path / "secret.txt")) is None
    assert safe_file(tree, str(tree / "samples.png")) is None  # even inside: names are relative to the folder
