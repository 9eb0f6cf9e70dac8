"""gateway.malloc_tuning on this machine's glibc: the calls work and trims repeat."""

from __future__ import annotations

import asyncio

import pytest

from gateway import malloc_tuning


def test_glibc_takes_the_arena_cap_and_trims() -> None:
    if malloc_tuning._glibc() is None:
        pytest.skip("not glibc")
    assert malloc_tuning.limit_arenas(malloc_tuning.ARENAS) is True
    blocks = [bytearray(256 * 1024) for _ in range(64)]  # 16 MiB from the heap, then freed
    del blocks
    assert isinstance(malloc_tuning.trim(), bool)


async def test_install_trims_after_start_then_again_and_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims: list[float] = []
    loop = asyncio.get_running_loop()

    def trim() -> bool:
        trims.append(loop.time())
        return True

    monkeypatch.setattr(malloc_tuning, "trim", trim)
    started = loop.time()
    malloc_tuning.install(loop, first=0.05, every=0.02)
    for _ in range(200):  # bounded: at most 2 s
        if len(trims) >= 3:
            break
        await asyncio.sleep(0.01)
    assert len(trims) >= 3
    assert trims[0] - started >= 0.05
