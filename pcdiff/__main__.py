"""`python -m pcdiff …` is the same as `pcdiff …`."""
import sys

from .app.cli import main

sys.exit(main())
