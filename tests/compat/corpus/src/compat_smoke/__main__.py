"""Run the checks (all, or those named on the command line) and print JSON."""

import json
import sys


def main():
    from compat_smoke import checks

    names = sys.argv[1:] or sorted(checks.CHECKS)
    results = {}
    for name in names:
        try:
            results[name] = checks.CHECKS[name]()
        except BaseException as e:  # noqa: BLE001 - a failure is a result too
            results[name] = f"ERROR: {type(e).__name__}: {e}"
    json.dump(results, sys.stdout, indent=1, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
