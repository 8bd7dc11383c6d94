"""The embedded synthetic data set: simulate scenes, tile them, remember the settings.

This is the one entry point through which training builds data (the
``experiment=quickstart`` config points ``data.builder`` here); the runtime
package never imports ``data_prep``. The simulator settings are stored in the
data set's ``dataset.json`` (key ``synthetic``), so a later run asking for
other settings is refused instead of silently training on the old data, or,
with ``rebuild=true``, gets the data set rebuilt.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

from insarslide.data.patchstore import DATASET_FILE
from insarslide.settings import differences

log = logging.getLogger(__name__)
SETTINGS_KEY = "synthetic"
RUN_ONLY = ("n_jobs", "out_dir")  # how and where a data set was made, not what it holds


def build_synthetic_dataset(root: str | Path, *, settings: Mapping[str, Any], patch_size: int,
                            rebuild: bool = False) -> Path:
    """Make sure ``root`` holds the patch data set of ``settings``; build (or rebuild) it if not.

    Returns ``root``. Raises ``ValueError`` naming the differing settings when
    ``root`` holds a data set of other settings and ``rebuild`` is false.
    """
    from data_prep.patches import build_patches
    from data_prep.simulate import plain_settings, simulate_dataset

    root = Path(root)
    plain = plain_settings(settings)
    wanted = {k: v for k, v in plain.items() if k not in RUN_ONLY}  # what the data set's index records
    scenes_dir = Path(plain["out_dir"])
    index = root / DATASET_FILE
    if index.is_file():
        meta = json.loads(index.read_text())
        stored, stored_patch = meta.get(SETTINGS_KEY), meta.get("patch_size")
        if stored is None:  # a data set of the user's own (built from real scenes): use it as it is
            log.warning("%s: data set not made by the simulator; the simulator settings are not used", root)
            return root
        diffs = differences(stored, plain, ignore=RUN_ONLY)
        if stored_patch != patch_size:
            diffs.append(f"patch_size: {stored_patch!r} -> {patch_size!r}")
        if not diffs:
            return root
        if not rebuild:
            raise ValueError(
                f"{root}: holds a data set made with other settings ({'; '.join(diffs)}). "
                f"Add data.rebuild=true to rebuild it, or point data.root (and data.builder.settings.out_dir) "
                f"at a fresh folder.")
        log.warning("rebuilding %s (%s)", root, "; ".join(diffs))
        shutil.rmtree(root)
        if scenes_dir.is_dir():
            shutil.rmtree(scenes_dir)
    log.info("no data set in %s: simulating %s scene(s) into %s", root, wanted["n_scenes"], scenes_dir)
    scenes = simulate_dataset(plain, scenes_dir, progress=False)
    report = build_patches(scenes, root, patch_size=patch_size, n_jobs=1, progress=False,
                           index_extra={SETTINGS_KEY: wanted})
    if report.failures:
        raise RuntimeError(f"building the synthetic data set in {root} failed: {report.failures}")
    return root
