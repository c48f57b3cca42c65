#!/usr/bin/env python
"""simbench: compare similarity heads for CLIP-style contrastive learning. See README.md."""

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
