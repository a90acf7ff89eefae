"""``python -m backtrack_gym`` runs the CLI."""

import sys

from backtrack_gym.cli import main

sys.exit(main())
