"""``python -m service``: the same as the ``lynx-relay`` console script."""

from service.cli import main

raise SystemExit(main())
