"""`python -m pcdiff …` is the same as `pcdiff …`."""
import sys

from .cli import main

sys.exit(main())
