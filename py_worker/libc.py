"""Functions of the C library, typed for ctypes, found once per name (Linux only)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Any

__all__ = ["function"]


@functools.lru_cache(maxsize=None)
def function(name: str, restype: Any, *argtypes: Any) -> Any:
    """libc's `name` returning `restype` and taking `argtypes` (errno kept for `ctypes.get_errno`),
    or None off Linux or where the C library lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    fn = getattr(libc, name, None)
    if fn is not None:
        fn.argtypes = list(argtypes)
        fn.restype = restype
    return fn
