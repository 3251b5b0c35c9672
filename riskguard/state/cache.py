"""numba's on-disk cache, keyed on every source file the kernels are built from.

numba keys its cache on the jitted function's own file stamp only: an edit to a helper
in ``valuation.py``, a record field in ``bundles.py`` or a metric code would otherwise
leave a stale compiled kernel in use (we hit exactly that). Worse, numba unpickles a
function's index file before checking its stamp, so an index written by another build
that names a class this build no longer has crashes the process. Each jitted function's
index and data files are therefore named after a digest of all those sources: another
build's files are never even opened.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType


def pin_cache_to_sources(sources: Iterable[ModuleType], jitted: Iterable[ModuleType]) -> str:
    """Name the cache files of every dispatcher in ``jitted`` after a digest of ``sources``.

    Returns the digest (16 hex digits). A numba whose cache lacks the internals this
    relies on (``_cache_file._index_name``) gets its cache disabled instead: a slower
    start, never a stale kernel.
    """
    digest = hashlib.sha256()
    for module in sources:
        digest.update(Path(str(module.__file__)).read_bytes())
    stamp = digest.hexdigest()[:16]
    for module in jitted:
        for dispatcher in vars(module).values():
            cache = getattr(dispatcher, "_cache", None)
            files = getattr(cache, "_cache_file", None)
            if cache is None or not hasattr(cache, "_impl"):
                continue
            if files is None or not hasattr(files, "_index_name"):
                cache.disable()  # a numba without these internals: never trust its cache
                continue
            base = f"{cache._impl.filename_base}-{stamp}"
            files._index_name = f"{base}.nbi"
            files._index_path = os.path.join(files._cache_path, files._index_name)
            files._data_name_pattern = f"{base}.{{number:d}}.nbc"
    return stamp
