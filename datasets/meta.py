"""A dataset's meta.json when it is already in the cache: read-only, never builds or downloads.

Figures use it for the Bayes-optimal scores of synthetic data (`bayes_val_auc`,
`bayes_val_bce`); results can be plotted on a machine without the data, so a missing or
unreadable entry gives None rather than an error.
"""

from __future__ import annotations

import json

from .cache import META_FILE, cache_root


def cached_meta(name: str) -> dict | None:
    """The newest ready cache entry's meta of `name`, or None when there is none."""
    try:
        # Folders starting with "." are builds in progress; their meta is not final yet.
        entries = sorted((p for p in (cache_root() / name).glob(f"*/{META_FILE}")
                          if not p.parent.name.startswith(".")), key=lambda p: p.stat().st_mtime)
        if not entries:
            return None
        with open(entries[-1]) as f:
            return json.load(f)
    except (OSError, ValueError):  # unreadable folder or half-written JSON: no meta
        return None
