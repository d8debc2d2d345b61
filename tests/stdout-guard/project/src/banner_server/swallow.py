"""A server whose import swallows a KeyboardInterrupt, as CPython itself does when the
signal lands in a weakref callback of the import system ("Exception ignored in ...
KeyedRef.remove"), and which never reads stdin, so only the stop itself can end it.
Packed as `swallow-server` by tests/stdout-guard (tests/signals.rs): a stop during the
import must still keep it from starting."""

import sys
import time


def log(text):
    print(f"swallow-server: {text}", file=sys.stderr, flush=True)


try:
    log("importing")
    time.sleep(60)
except KeyboardInterrupt:
    log("swallowed a KeyboardInterrupt during the import")


def main():
    log("serving")
    while True:
        time.sleep(0.1)
