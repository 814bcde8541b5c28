"""A control server on the listening socket systemd passes (socket activation), run by test_control.py under
`systemd-socket-activate`. Usage: control_activated.py SOCKET_PATH; serves until SIGTERM.
"""

import os
import signal
import sys
import threading

from dedupd.service.control import ControlServer

SD_LISTEN_FDS_START = 3


def main() -> int:
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        print("not socket-activated", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    handlers = {"status": lambda args: {"state": "running", "pid": os.getpid()}}
    with ControlServer(sys.argv[1], handlers, listen_fd=SD_LISTEN_FDS_START):
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
