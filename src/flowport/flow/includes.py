"""``additional_includes``: files and folders outside the flow folder, made available to it.

As prompt flow does, each entry (a path relative to the flow folder) is placed at the
root of a copy of the flow under its own base name. The copy is content-addressed, so
loading the same flow twice reuses it, and it is written atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flowport.flow.errors import FlowError

_SKIP_DIRS = {"__pycache__", ".promptflow", ".git", ".venv", "node_modules"}


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file below ``root`` (or ``root`` itself), sorted, caches skipped."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            yield Path(dirpath) / name


def content_hash(roots: list[tuple[str, Path]]) -> str:
    """A digest over the names and bytes of every file under the given (label, root) pairs."""
    digest = hashlib.sha256()
    for label, root in roots:
        for file in iter_files(root):
            rel = file.relative_to(root) if root.is_dir() else Path(file.name)
            digest.update(f"{label}/{rel.as_posix()}\0".encode())
            digest.update(file.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*_SKIP_DIRS), dirs_exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def materialize_includes(
    flow_dir: Path, flow_file: str, includes: list[str], cache_dir: Path | None = None
) -> Path:
    """Return a folder holding the flow plus its additional includes."""
    sources: list[tuple[str, Path]] = [(".", flow_dir)]
    for entry in includes:
        src = (flow_dir / str(entry)).resolve()
        if not src.exists():
            raise FlowError.single(
                "IncludeNotFound",
                f"additional_includes entry {entry!r} does not exist (looked for {src})",
                str(flow_dir / flow_file),
            )
        sources.append((src.name, src))
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / "flowport-flows"
    target = cache_dir / content_hash(sources)[:24]
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".staging-"))
    try:
        _copy(flow_dir, staging)
        for name, src in sources[1:]:
            _copy(src, staging / name)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
