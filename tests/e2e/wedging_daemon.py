"""A real `dedupd run` whose commit stage wedges for good on a file named wedge*: `python wedging_daemon.py
--config FILE`, started by the e2e tests (RunningDaemon.launcher) to see a stalled pipeline stop the systemd
watchdog pings. The daemon is dedupd's own; only the commit hook it is built with comes from here."""

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from dedupd.service.daemon import run

WEDGED = "test launcher: the commit stage wedges on purpose"


def wedge_on_wedge_files(paths: list[str]) -> None:
    if any(os.path.basename(path).startswith("wedge") for path in paths):
        logging.getLogger("wedging_daemon").warning(WEDGED)
        threading.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path)
    sys.exit(run(parser.parse_args().config, before_commit=wedge_on_wedge_files))
