"""``python -m pytest_steer.ifeval INPUT.jsonl RESPONSES.jsonl [--out VERDICTS.jsonl]``."""

from __future__ import annotations

import sys

from pytest_steer.ifeval.cli import main

if __name__ == "__main__":
    sys.exit(main())
