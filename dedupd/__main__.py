"""`python -m dedupd` is the `dedupd` command."""

from dedupd.cli.dedupd import main

raise SystemExit(main())
