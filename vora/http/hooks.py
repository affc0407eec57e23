"""Marks on Flask request hooks that tell the fast path which hooks it may skip."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# A Flask hook with this attribute acts only on requests to that path; the fast path may skip it elsewhere.
ACTS_ONLY_ON = "vora_acts_only_on"
# A Flask hook with this attribute is one whose work the fast path does itself.
DONE_BY_FAST_PATH = "vora_done_by_fast_path"


def acts_only_on(path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a Flask hook as doing nothing for requests to any other path."""

    def mark(hook: Callable[..., Any]) -> Callable[..., Any]:
        setattr(hook, ACTS_ONLY_ON, path)
        return hook

    return mark


def done_by_fast_path(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a Flask hook whose work the fast path does for its own requests."""
    setattr(hook, DONE_BY_FAST_PATH, True)
    return hook
