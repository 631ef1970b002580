"""Atomic output folders: write into a hidden temporary sibling, then rename into place.

A crash or kill mid-write leaves at most a ``.tmp-*`` folder next to the target, never a
half-written output at the target path; an existing output is only replaced when asked to and
only once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from bayesfuse.exceptions import OutputExistsError

__all__ = ["check_output_dir", "atomic_output_dir", "make_temp_dir", "replace_dir"]


def make_temp_dir(parent: Path, name: str) -> Path:
    """A hidden ``.tmp-<name>-*`` folder in ``parent`` with the usual permissions (umask), not 0700."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def replace_dir(src: Path, dst: Path) -> None:
    """Move the complete folder ``src`` to ``dst`` (replacing ``dst``): renames only, never a partial ``dst``."""
    old = None
    if dst.exists():
        old = dst.with_name(f".old-{dst.name}-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_output_dir(path: str | Path, overwrite: bool, flag: str = "overwrite=True") -> Path:
    """Refuse an existing non-empty ``path`` unless ``overwrite`` (``flag`` names the switch to use)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is a file, not a folder; choose another output path.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"output folder {path} exists and is not empty; pass {flag} to replace it, or "
                                "choose another path.")
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool, flag: str = "overwrite=True") -> Iterator[Path]:
    """``with atomic_output_dir(out, overwrite) as tmp:`` write into ``tmp``; renamed to ``out`` on success."""
    path = check_output_dir(path, overwrite, flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path.parent, path.name)
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
