"""Bearer tokens from a token file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmworker.serve.auth import BearerAuth, TokenFileError, bearer_token


def test_the_bearer_token_of_a_header() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
    assert bearer_token("") is None


def test_only_the_file_s_token_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret\n")  # kubectl create secret --from-file keeps the newline
    auth = BearerAuth(path)
    assert auth.allows("Bearer s3cret")
    assert not auth.allows("Bearer s3cre")
    assert not auth.allows("Bearer s3cret2")
    assert not auth.allows(None)


def test_a_rotated_token_takes_effect(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old")
    auth = BearerAuth(path)
    path.write_text("newer")
    os.utime(path, ns=(1, 1))  # a different stamp even within the clock's resolution
    assert auth.allows("Bearer newer")
    assert not auth.allows("Bearer old")
    path.unlink()  # mid-rotation: the last token stays valid
    assert auth.allows("Bearer newer")


@pytest.mark.parametrize(("content", "words"), [(None, "No such file"), ("\n", "is empty")])
def test_a_missing_or_empty_file_is_refused_at_start(
    tmp_path: Path, content: str | None, words: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TokenFileError, match=words):
        BearerAuth(path)
