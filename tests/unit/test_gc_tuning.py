"""`gateway.gc_tuning`: the start-up heap leaves the garbage collector's walks once the
event loop has run for a while."""

from __future__ import annotations

import asyncio
import gc

from gateway import gc_tuning


def test_install_freezes_what_is_alive_after_the_delay() -> None:
    gc.unfreeze()
    loop = asyncio.new_event_loop()
    try:
        gc_tuning.install(loop, after=0.05)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert gc.get_freeze_count() == 0  # not yet
        loop.run_until_complete(asyncio.sleep(0.2))
        assert gc.get_freeze_count() > 1000  # this interpreter's modules, at least
        survivor = [object()]  # made after the freeze: still collected as before
        assert gc.is_tracked(survivor)
    finally:
        gc.unfreeze()
        loop.close()
