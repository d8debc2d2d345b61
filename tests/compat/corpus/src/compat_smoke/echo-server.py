"""A script, not a module (its name is not an identifier): never imported to check it."""

import os
import time

open(os.environ["COMPAT_ECHO_MARKER"], "w").write("imported")
time.sleep(3600)
