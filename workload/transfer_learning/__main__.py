from __future__ import annotations

from transfer_learning.cli import main

raise SystemExit(main())
