"""``python -m statesession`` is the ``statesession`` command."""

from ._cli.main import main

raise SystemExit(main())
