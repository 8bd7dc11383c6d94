"""Make the figures of docs/simulator.md: one PNG per band of a sample simulated scene.

    python docs/make_simulator_figures.py [--size 512] [--seed 0] [--out docs/figures]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from data_prep.simulate import simulate_scene  # noqa: E402
from insarslide.contract.spec import BAND_BY_NAME, BANDS  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf" / "simulate.yaml"
COLOURMAPS = {"phase": "twilight", "coherence": "gray", "intensity": "gray", "elevation": "terrain",
              "displacement": "RdBu", "unwrapped_phase": "viridis", "local_incidence_angle": "magma"}


def make_figures(out: Path, size: int, seed: int) -> list[Path]:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF))
    cfg.update(size=[size, size], seed=seed)
    cfg["landslides"]["density_per_km2"] = 0.03  # enough landslides to see at this size
    scene, truth = simulate_scene(cfg, 0)
    out.mkdir(parents=True, exist_ok=True)
    outline = truth["label"].astype(float)
    footprint = truth["footprint"].astype(float)
    paths = []
    for name in BANDS + ("landslide", "valid"):
        fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=100)
        if name in BANDS:
            values = scene["bands"][name]
            if name == "intensity":
                values = 10 * np.log10(np.maximum(values, 1e-6))
            lo, hi = np.nanpercentile(values, [1, 99])
            if name == "phase":
                lo, hi = -np.pi, np.pi
            if name == "displacement":
                hi = max(abs(lo), abs(hi))
                lo = -hi
            im = ax.imshow(values, cmap=COLOURMAPS[name], vmin=lo, vmax=hi, interpolation="nearest")
            unit = "dB" if name == "intensity" else BAND_BY_NAME[name].units
            fig.colorbar(im, ax=ax, shrink=0.8, label=unit)
            ax.contour(outline, levels=[0.5], colors="yellow", linewidths=0.6)  # the inventory
            ax.contour(footprint, levels=[0.5], colors="cyan", linewidths=0.4)  # what moved and decorrelated
        else:
            im = ax.imshow(scene[name], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name} ({scene['attrs']['orbit_direction'].lower()}, seed {seed})")
        ax.set_axis_off()
        path = out / f"simulator_{name}.png"
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "figures"))
    args = parser.parse_args()
    for path in make_figures(Path(args.out), args.size, args.seed):
        print(path)


if __name__ == "__main__":
    main()
