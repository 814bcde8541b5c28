"""Test-only decode hook: run with DEDUPD_TEST_DECODE_HOOK=<this file> to make encode workers misbehave.

Encode workers call `before_decode(path)` before each file. What happens depends on how the file's name
starts (the file itself can be any image, so it encodes normally once let through):
  hang*   the worker sleeps forever          -> the pool's timeout turns it into `decode_timeout`
  crash*  the worker segfaults (SIGSEGV)     -> `decoder_crash`
  exit*   the worker calls os._exit(3)       -> `decoder_crash`
  raise*  RuntimeError in the worker         -> `decode_error`, the worker lives on
  gate*   creates "<path>.started", waits until "<path>.release" exists, then decodes normally (lets a
          test know a worker holds the file, and choose when it is done); with DEDUPD_TEST_GATE_DIR set,
          these two marker files are "<that dir>/<name>.started" and ".release" instead (so that a daemon
          watching the file's folder does not see them)
Any other name decodes normally. Shared by the encode-pool tests and the daemon end-to-end tests.
"""

import os
import resource
import signal
import time


def before_decode(path: str) -> None:
    name = os.path.basename(path)
    if name.startswith("hang"):
        while True:
            time.sleep(3600)
    if name.startswith("crash"):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file from a deliberate segfault
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("exit"):
        os._exit(3)
    if name.startswith("raise"):
        raise RuntimeError(f"decode hook raised for {name}")
    if name.startswith("gate"):
        gate_dir = os.environ.get("DEDUPD_TEST_GATE_DIR")
        marker = os.path.join(gate_dir, name) if gate_dir else path
        open(marker + ".started", "w").close()
        while not os.path.exists(marker + ".release"):
            time.sleep(0.02)
