"""``python -m fal_emulator``: the same as the ``fal-emulator`` console script."""

from fal_emulator.cli import main

raise SystemExit(main())
