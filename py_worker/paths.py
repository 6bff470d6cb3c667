"""Local path policy: every local path a request names must lie under a configured root.

Paths are resolved (symlinks followed, `..` collapsed) before the check, so a
`..` escape, an absolute path elsewhere, or a symlink inside a root that points
outside of it are all refused with PERMISSION_DENIED.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Sequence

from py_worker.errors import PermissionDenied

GLOB_CHARS = set("*?[{")


def _roots_text(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots) or "(none configured)"


def is_under(path: Path, root: Path) -> bool:
    """True when the resolved `path` is `root` or inside it (both must already be resolved)."""
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def check_under_roots(path: str | os.PathLike, roots: Sequence[Path], what: str = "path") -> Path:
    """Resolve `path` (absolute, or relative to the first root) and return it if it lies under a root.

    Raises PermissionDenied naming the roots otherwise.
    """
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [r / p for r in roots]
    inside = [Path(os.path.realpath(c)) for c in candidates]
    inside = [real for real in inside if any(is_under(real, r) for r in roots)]
    for real in inside:
        if real.exists():
            return real
    if inside and len(inside) == len(candidates):
        return inside[0]
    raise PermissionDenied(
        f"{what} '{path}' is outside the allowed roots ({_roots_text(roots)}); "
        "start the server with --data-root/--export-root covering it"
    )


def looks_like_path(text: str) -> bool:
    """True for strings that can only be local paths (not a Hub id such as "user/name")."""
    if not text:
        return False
    if text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", ".."):
        return True
    if ".." in Path(text).parts:
        return True
    if text.count("/") >= 2 or "\\" in text:
        return True
    return False


def find_local(text: str, roots: Sequence[Path]) -> Path | None:
    """The local dataset folder or file `text` names, or None when `text` is not local.

    `text` is local when it looks like a path or exists under one of the roots
    (relative paths are taken relative to each root in turn). A local path
    outside the roots raises PermissionDenied.
    """
    p = Path(text).expanduser()
    if p.is_absolute():
        return check_under_roots(p, roots, "dataset path")
    for root in roots:
        cand = root / p
        if cand.exists() or cand.is_symlink():
            return check_under_roots(cand, roots, "dataset path")
    if looks_like_path(text):
        real = check_under_roots(p, roots, "dataset path")
        return real
    return None


def static_prefix(pattern: str) -> str:
    """The part of a glob pattern before its first wildcard component."""
    parts = Path(pattern).parts
    out: list[str] = []
    for part in parts:
        if any(c in GLOB_CHARS for c in part):
            break
        out.append(part)
    return str(Path(*out)) if out else ("/" if pattern.startswith("/") else ".")


def check_patterns(patterns: Iterable[str], base: Path | None, roots: Sequence[Path]) -> list[str]:
    """Make data-file patterns absolute and check that they and every match stay under the roots.

    Relative patterns are taken relative to `base` (a dataset folder) or, with
    no base, to the first root under which they match anything. Remote URLs
    (`hf://`, `s3://`, ...) are returned unchanged.
    """
    out: list[str] = []
    for pat in patterns:
        if "://" in pat:
            out.append(pat)
            continue
        p = Path(pat).expanduser()
        if p.is_absolute():
            bases = [None]
        elif base is not None:
            bases = [base]
        else:
            bases = list(roots)
        chosen: str | None = None
        for b in bases:
            full = str(p if b is None else b / p)
            if glob.glob(full, recursive=True):
                chosen = full
                break
        if chosen is None:
            chosen = str(p if bases[0] is None else bases[0] / p)
        norm = os.path.normpath(chosen)
        check_under_roots(static_prefix(norm), roots, "data file pattern")
        for match in glob.glob(norm, recursive=True):
            check_under_roots(match, roots, "data file")
        out.append(norm)
    return out


def check_tree(folder: Path, roots: Sequence[Path], max_entries: int = 100_000) -> None:
    """Refuse a dataset folder holding symlinks that resolve outside the roots."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            if full.is_symlink():
                check_under_roots(full, roots, "file in dataset folder")
            seen += 1
            if seen >= max_entries:
                return
