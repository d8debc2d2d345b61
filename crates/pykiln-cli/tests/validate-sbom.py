"""Validate CycloneDX JSON files against the 1.6 schema with CycloneDX's own library
(cyclonedx-python-lib, installed by tests/prereqs). Exit 1 if any is invalid."""

import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

validator = JsonStrictValidator(SchemaVersion.V1_6)
invalid = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        error = validator.validate_str(f.read())
    if error is None:
        print(f"{path}: valid CycloneDX 1.6")
    else:
        print(f"{path}: INVALID: {error}")
        invalid += 1
sys.exit(1 if invalid else 0)
