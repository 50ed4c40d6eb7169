"""`python -m scaling_sweeper.cli ...` runs the `sweeper` command."""

import sys

from scaling_sweeper.cli import main

sys.exit(main())
