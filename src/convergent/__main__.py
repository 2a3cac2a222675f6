"""``python -m convergent <command>``: the same as the ``convergent`` console script."""

from convergent.cli import main

raise SystemExit(main())
