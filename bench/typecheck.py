"""Cost of run-time shape checking on a CMATH training step: ``bench/train_step.py
--checking-only`` (one setup, one script; this name stays for the commands in the docs).

    python bench/typecheck.py                 # hidden 256 and 1024 at IEMOCAP shapes
    python bench/typecheck.py --hidden 64 --threads 1
    python bench/typecheck.py --quick

Checking is chosen at import (``FUSIONKIT_TYPECHECK``), so each side runs in fresh
processes, alternating; the table gives the ratio, the step times, and the cost per checked
call. Every option of ``bench/train_step.py`` works here.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import train_step

if __name__ == "__main__":
    sys.exit(train_step.main(["--checking-only", *sys.argv[1:]]))
