"""Test-only decode faults: with this folder on PYTHONPATH (`with_decode_faults`), every encode worker misbehaves
on chosen files. dedupd itself knows nothing of it: Python imports this module at every interpreter start, and
its audit hook (`sys.addaudithook`) sees each file the worker opens, so the fault strikes in the real worker
process at the moment its decoder opens the file.

What happens depends on how the file's name starts (the file itself can be any image, so it encodes normally
once let through); only in processes named like the encode pool's workers, never for Python sources:
  hang*   the worker sleeps forever          -> the pool's timeout turns it into `decode_timeout`
  crash*  the worker segfaults (SIGSEGV)     -> `decoder_crash`
  exit*   the worker calls os._exit(3)       -> `decoder_crash`
  raise*  RuntimeError in the worker         -> `decode_error`, the worker lives on
  gate*   creates "<path>.started", waits until "<path>.release" exists, then decodes normally (lets a
          test know a worker holds the file, and choose when it is done); with DECODE_FAULTS_GATE_DIR set,
          these two marker files are "<that dir>/<name>.started" and ".release" instead (so that a daemon
          watching the file's folder does not see them)
Any other name decodes normally. Shared by the encode-pool, pipeline, facade and daemon end-to-end tests.
"""

import multiprocessing
import os
import resource
import signal
import sys
import time
from typing import Any

#: The name the encode pool gives its worker processes.
WORKER_NAME = "dedupd-encode-worker"

_MARKERS = (".started", ".release")


def _before_open(path: str) -> None:
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
        raise RuntimeError(f"decode fault raised for {name}")
    if name.startswith("gate"):
        gate_dir = os.environ.get("DECODE_FAULTS_GATE_DIR")
        marker = os.path.join(gate_dir, name) if gate_dir else path
        open(marker + ".started", "w").close()  # a marker: not acted on (its name ends in .started)
        while not os.path.exists(marker + ".release"):
            time.sleep(0.02)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not args or not isinstance(args[0], str):
        return
    path = args[0]
    if path.endswith((".py", ".pyc", *_MARKERS)) or multiprocessing.current_process().name != WORKER_NAME:
        return
    _before_open(path)


sys.addaudithook(_audit)
