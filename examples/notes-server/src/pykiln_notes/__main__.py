"""`python -m pykiln_notes` runs the server, as the packaged binary does."""

import sys

from pykiln_notes.server import main

sys.exit(main())
