"""``python -m bench``: the whole benchmark suite (see `bench.suite`)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.suite import main  # noqa: E402

if __name__ == "__main__":
    main()
