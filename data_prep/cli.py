"""``insarslide-prep STEP [ARGS ...]``: one command for every data-preparation step (the same as
``python -m data_prep.STEP ARGS ...``), so an installed package runs them from any folder."""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

STEPS = {
    "acquire": ("data_prep.acquire.cli", "find and download a Sentinel-1 SLC pair around an event (CDSE)"),
    "process": ("data_prep.process", "DInSAR chain (SNAP gpt/esa_snappy, or NumPy) into a scene file"),
    "simulate": ("data_prep.simulate", "simulated InSAR landslide scenes"),
    "validate": ("data_prep.validate", "check scene files against docs/data_format.md"),
    "patches": ("data_prep.patches", "cut scenes into a patch data set (or: patches convert OLD NEW)"),
    "difficulty": ("data_prep.difficulty", "how hard a labelled data set is: baselines and separability"),
}


def usage() -> str:
    width = max(map(len, STEPS))
    lines = [f"  {name:<{width}}  {about}" for name, (_, about) in STEPS.items()]
    return "usage: insarslide-prep STEP [ARGS ...]\n\nsteps:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    step, rest = args[0], args[1:]
    if step not in STEPS:
        print(f"insarslide-prep: unknown step {step!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(STEPS[step][0])
    sys.argv = [f"insarslide-prep {step}", *rest]  # the Hydra steps read their overrides from sys.argv
    result = module.main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
