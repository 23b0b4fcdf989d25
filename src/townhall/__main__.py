"""``python -m townhall``: the same command line as ``townhall``."""

from townhall.cli.main import main

raise SystemExit(main())
