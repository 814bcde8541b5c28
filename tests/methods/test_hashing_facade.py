"""dedupd.methods hashers in their worker processes: a decoder that crashes or hangs costs its file, not the call.

The faults come from tests/decode_faults/ (chosen by file name) in the real encode workers the facade starts;
the hashes of the other files are the ones the same files give without any fault.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dedupd.methods import PHash

FIXTURES = Path(__file__).parents[1] / "fixtures" / "images"


def test_a_crashing_and_a_hanging_decoder_cost_their_files_only(
    tmp_path: Path, decode_faults: None, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("photo_01.jpg", "photo_02.jpg", "photo_03.jpg", "photo_04.jpg"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    hasher = PHash(verbose=False)
    expected = hasher.encode_images(tmp_path, num_enc_workers=2)
    assert len(expected) == 4
    shutil.copy(FIXTURES / "photo_01.jpg", tmp_path / "crash_01.jpg")  # the worker segfaults
    shutil.copy(FIXTURES / "photo_02.jpg", tmp_path / "exit_02.jpg")  # the worker exits
    shutil.copy(FIXTURES / "photo_03.jpg", tmp_path / "hang_03.jpg")  # killed after the pool's timeout
    with caplog.at_level("WARNING"):
        got = hasher.encode_images(tmp_path, num_enc_workers=2)
    assert got == expected
    invalid = {Path(r.args[0]).name: r.args[1] for r in caplog.records  # type: ignore[index, arg-type]
               if r.getMessage().startswith("Invalid image file")}
    assert invalid.keys() == {"crash_01.jpg", "exit_02.jpg", "hang_03.jpg"}
    assert "killed by SIGSEGV" in invalid["crash_01.jpg"] and "exited with code 3" in invalid["exit_02.jpg"]
    assert "decoder worker killed" in invalid["hang_03.jpg"]


UNGUARDED_SCRIPT = """
import sys
from dedupd.methods import PHash

print(PHash(verbose=False).encode_images(sys.argv[1], num_enc_workers=2))
"""


def test_a_script_without_the_main_guard_fails_with_a_clear_error(tmp_path: Path) -> None:
    """Spawned workers import the caller's script; one that starts workers at import cannot start any: the call
    fails, saying what to do, where it would otherwise wait for workers for ever."""
    shutil.copy(FIXTURES / "photo_01.jpg", tmp_path / "photo_01.jpg")
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1
    assert "WorkersCannotStart: encode workers failed to start 3 times in a row" in run.stderr
    assert 'needs the `if __name__ == "__main__":` guard' in run.stderr
