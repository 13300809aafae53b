"""``python -m statesession`` is the ``statesession`` command."""

from ._cli import main

raise SystemExit(main())
