"""Memory an idle daemon gives back (issue 13.16; the figures are in BENCHMARKS.md "Memory", measured by
bench/memory.py, never asserted here): freed heap returns to the kernel, the CNN session keeps no arena, and a
memory-mapped file's pages leave the process without leaving the file."""

import mmap
import os
from pathlib import Path

from dedupd.imaging.cnn import Encoder
from dedupd.memory import file_mappings, release_free_memory, unmap_file_pages


def test_freed_heap_is_given_back() -> None:
    blocks = [bytes(2048) for _ in range(50_000)]  # ~100 MB from malloc's heap (above pymalloc's 512 bytes)
    del blocks
    assert release_free_memory() is True


def test_the_cnn_session_keeps_no_memory_arena() -> None:
    encoder = Encoder("sscd-distilled", providers=("cpu",))
    assert encoder._session.get_session_options().enable_cpu_mem_arena is False


def resident_kib(address: int) -> int:
    """Rss of this process's mapping that starts at `address`, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0]
        if not head.endswith(":"):
            inside = int(head.split("-")[0], 16) == address
        elif inside and head == "Rss:":
            return int(line.split()[1])
    raise AssertionError(f"no mapping at {address:#x}")


def test_a_mapped_files_pages_leave_the_process_and_stay_readable(tmp_path: Path) -> None:
    path = tmp_path / "data"
    content = os.urandom(4 << 20)
    path.write_bytes(content)
    assert file_mappings(path) == []
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert bytes(mapped) == content  # every page read, so mapped
        [(address, length)] = file_mappings(path)
        assert length == len(content) and resident_kib(address) >= 4096
        unmap_file_pages(file_mappings(path))
        assert resident_kib(address) == 0
        assert bytes(mapped) == content and resident_kib(address) >= 4096  # read again from the page cache
