"""Progress bars on long work: tqdm when installed, else a line on stderr every few seconds.

>>> sum(progress(range(3), desc="demo", enabled=False))
3
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool = True) -> Iterator[T]:
    if not enabled:
        yield from iterable
        return
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(iterable, total=total, desc=desc, unit="frame", leave=False, dynamic_ncols=True,
                        mininterval=0.5, file=sys.stderr)
        return
    last = time.monotonic()
    count = 0
    for count, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if now - last >= 3.0:
            last = now
            print(f"{desc}: {count}" + (f"/{total}" if total else ""), file=sys.stderr, flush=True)
