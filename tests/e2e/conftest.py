"""End-to-end tests reuse the orchestrator tests' fake upstream servers."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "orchestrator"))
