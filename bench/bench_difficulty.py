"""How hard is the simulator's output? The difficulty report on freshly simulated scenes, against issue 11's targets.

    python bench/bench_difficulty.py [--scenes 6] [--size 1024] [--seed 11] [--preset default|easy|regimes]
                                     [--regime hillslope|vegetated|arid|coseismic|slow|all]
                                     [--set landslides.density_per_km2=0.01 ...] [--keep DIR]

Simulates the scenes (settings of conf/simulate.yaml, a preset of
conf/simulate/ and ``--set`` overrides on top), runs
``data_prep.difficulty`` on them (fit on every other scene, scores on the
rest) and prints each figure next to its target. ``--regime NAME`` draws
every scene from that regime (conf/simulate.yaml ``regimes``); ``--regime all``
does so for each regime in turn and ends with a table of the targets per regime.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import hydra  # noqa: F401  (registers the ${now:} resolver used by Hydra configs)
from omegaconf import OmegaConf

from data_prep.difficulty import difficulty_report, format_report
from data_prep.simulate import simulate_dataset

CONF = Path(__file__).resolve().parents[1] / "conf"
TARGETS = (  # (label, value getter, low, high)
    ("best single-band held-out IoU", lambda r: r["best_held_out_single_band"]["iou"], 0.0, 0.10),
    ("coherence AUC", lambda r: r["bands"]["coherence"]["auc"], 0.70, 0.90),
    ("logistic regression held-out IoU", lambda r: r["logistic"]["iou"], 0.0, 0.15),
    ("region area p33 (px)", lambda r: r["labels"].get("area_p33_px", float("nan")), 156 / 2, 156 * 2),
    ("region area p66 (px)", lambda r: r["labels"].get("area_p66_px", float("nan")), 1043 / 2, 1043 * 2),
    ("positive tile share", lambda r: r["labels"]["positive_tile_share"], 0.25, 0.45),
)


def settings(preset: str, overrides: list[str]) -> dict:
    cfg = OmegaConf.load(CONF / "simulate.yaml")
    cfg.pop("defaults", None)
    cfg = OmegaConf.merge(cfg, OmegaConf.load(CONF / "simulate" / f"{preset}.yaml"), OmegaConf.from_dotlist(overrides))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--preset", default="default", choices=sorted(p.stem for p in (CONF / "simulate").glob("*.yaml")))
    parser.add_argument("--regime", default=None, help="every scene from this regime, or 'all' (each in turn)")
    parser.add_argument("--set", nargs="*", default=[], help="simulator overrides, e.g. landslides.density_per_km2=0.01")
    parser.add_argument("--keep", type=Path, default=None, help="simulate into this folder and keep the scenes")
    args = parser.parse_args()
    cfg = settings(args.preset, args.set)
    cfg.update(n_scenes=args.scenes, size=[args.size, args.size], seed=args.seed)
    regimes = [n for n in cfg["regimes"]["weights"]] if args.regime == "all" else [args.regime]
    met = {}
    for regime in regimes:
        run = dict(cfg)
        if regime is not None:
            if regime not in cfg["regimes"]["weights"]:
                parser.error(f"--regime {regime}: not one of {sorted(cfg['regimes']['weights'])} or all")
            run["regimes"] = {**cfg["regimes"], "weights": {n: float(n == regime) for n in cfg["regimes"]["weights"]}}
        met[regime or args.preset] = run_one(run, args, regime)
    if len(met) > 1:
        print("\ntargets met per regime (issue 11):")
        print(f"  {'regime':<12}" + "".join(f" {label[:22]:>23}" for label, *_ in TARGETS))
        for name, values in met.items():
            print(f"  {name:<12}" + "".join(f" {v:>15.3f} {'met' if ok else 'NOT':>7}" for v, ok in values))


def run_one(cfg: dict, args: argparse.Namespace, regime: str | None) -> list[tuple[float, bool]]:
    """Simulate, report and print one configuration; returns (value, met) per target."""
    with tempfile.TemporaryDirectory() as work:
        out = (args.keep / (regime or "scenes")) if args.keep else Path(work)
        start = time.perf_counter()
        paths = simulate_dataset(cfg, out, progress=False)
        simulated = time.perf_counter() - start
        try:
            report = difficulty_report(paths)
        except ValueError as err:  # e.g. no landslide in one half: a figure per target would mean nothing
            print(f"regime {regime}: {err}")
            return [(float("nan"), False) for _ in TARGETS]
    print(f"{args.scenes} scenes of {args.size} x {args.size}, seed {args.seed}, preset {args.preset} "
          f"{'regime ' + regime if regime else ''} {' '.join(args.set)} (simulated in {simulated:.0f} s)")
    print(format_report(report))
    print("\ntargets (issue 11):")
    values = []
    for label, get, lo, hi in TARGETS:
        value = get(report)
        values.append((value, lo <= value <= hi))
        print(f"  {label:<34} {value:8.3f}   target [{lo:g}, {hi:g}]: {'met' if lo <= value <= hi else 'NOT met'}")
    return values

if __name__ == "__main__":
    main()
