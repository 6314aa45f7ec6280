"""The GGUF importer's command line and checks (the real import: tests/integration)."""

import json
from pathlib import Path

import pytest

from lmworker.import_gguf import check_directory, main


def test_a_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "nope.gguf"), str(tmp_path / "out")]) == 1
    assert "nope.gguf not found: expected a .gguf file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_directory_our_loader_cannot_read_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(ValueError, match="only 'llama' is supported"):
        check_directory(tmp_path)
