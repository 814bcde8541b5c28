"""Memory an idle daemon gives back (issue 13.16; the figures are in BENCHMARKS.md "Memory", measured by
bench/memory.py, never asserted here): freed heap returns to the kernel, and the CNN session keeps no arena."""

from dedupd.imaging.cnn import Encoder
from dedupd.memory import release_free_memory


def test_freed_heap_is_given_back() -> None:
    blocks = [bytes(2048) for _ in range(50_000)]  # ~100 MB from malloc's heap (above pymalloc's 512 bytes)
    del blocks
    assert release_free_memory() is True


def test_the_cnn_session_keeps_no_memory_arena() -> None:
    encoder = Encoder("sscd-distilled", providers=("cpu",))
    assert encoder._session.get_session_options().enable_cpu_mem_arena is False
