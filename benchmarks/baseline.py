"""A/B benchmarks: an earlier commit's srvwatch as one more peer in the same run.

``python benchmarks/baseline.py REV`` extracts ``src/srvwatch`` at git revision
``REV`` into ``.bench-base/srvwatch_base`` (its imports are relative, so it
loads under that name beside the current package). With
``SRVWATCH_BENCH_BASE=.bench-base`` set, the resolver benchmarks add it as a
peer labelled ``srvwatch@base``, interleaved with the others, so a change is
measured against its predecessor on the same machine in the same minute.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BASE_LABEL = "srvwatch@base"
_ENV = "SRVWATCH_BENCH_BASE"
_REVISION_FILE = "REVISION"


def load_base() -> ModuleType | None:
    """The baseline package if ``SRVWATCH_BENCH_BASE`` names its directory, else None."""
    where = os.environ.get(_ENV)
    if not where:
        return None
    path = str(Path(where).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("srvwatch_base")


def extract(rev: str, dest: Path) -> Path:
    """``src/srvwatch`` at ``rev`` as the package ``srvwatch_base`` under ``dest``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "src/srvwatch"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    target = dest / "srvwatch_base"
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = Path(tmp) / "src.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        shutil.move(str(Path(tmp) / "src" / "srvwatch"), target)
    # Which commit it is, for the reports: the package alone does not say.
    short = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    (target / _REVISION_FILE).write_text(short + "\n")
    return target


def base_revision() -> str | None:
    """The short commit hash of the extracted baseline, if one is configured and recorded."""
    where = os.environ.get(_ENV)
    if not where:
        return None
    path = Path(where) / "srvwatch_base" / _REVISION_FILE
    return path.read_text().strip() if path.exists() else None


if __name__ == "__main__":
    revision = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    print(extract(revision, ROOT / ".bench-base"))
