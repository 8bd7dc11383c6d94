"""Check scene files against docs/data_format.md: ``python -m data_prep.validate FILE... [--require-labels]``.

Prints, per file, every problem (file and variable named), warnings, and the
number of values outside each band's expected range; exits 1 if any file has
a problem, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys

from insarslide.contract.validation import validate_scene


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.validate", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="scene files (.nc)")
    parser.add_argument("--require-labels", action="store_true", help="also require the 'landslide' variable")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        report = validate_scene(path, require_labels=args.require_labels)
        status = "OK" if report.ok else "FAILED"
        print(f"{status} {path}")
        for problem in report.problems:
            print(f"  problem: {path}: {problem}")
        for warning in report.warnings:
            print(f"  warning: {path}: {warning}")
        if report.ok:
            outliers = ", ".join(f"{b}={n}" for b, n in report.out_of_range.items())
            print(f"  values outside the expected range: {outliers}")
            print(f"  valid pixels: {report.valid_pixels}, landslide pixels: {report.landslide_pixels}")
        failed += not report.ok
    print(f"{len(args.files) - failed} of {len(args.files)} file(s) pass", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
