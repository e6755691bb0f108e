"""Record a fixed set of small CLI runs, and compare two recordings bit for bit.

    python scripts/regression_record.py record DIR     # run everything into DIR
    python scripts/regression_record.py compare A B    # exit 1 on any difference

The runs cover the run layer's paths on the bundled tiny model: image (4 degradations x
ddrm/mcg), blind (blur_given gt; blur_estimated with a classical estimate and in the loop) and
video (temporal=independent / all, with classical and in-loop kernels) on a miniature BSD tree.
``compare`` checks every ``results.jsonl`` record and ``summary.json`` field by field and in
order (metrics exactly; timings, dates and absolute paths left out) and the bytes of every PNG.
It is how a refactor of the run layer shows that its results are unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "sampler.timesteps=4",
    "metrics.lpips=false",
    "dataset.limit=2",
    "batch_size=2",
    "logger=none",
]
# name -> (multirun?, overrides); a miniature BSD tree is written first (once).
RUNS: dict[str, tuple[bool, list[str]]] = {
    "image": (
        True,
        ["degradation=sr4,deblur_gauss,inpaint_random,colorize", "sampler=ddrm,mcg"],
    ),
    "blind_gt": (False, ["degradation=blur_given"]),
    "blind_estimated": (False, ["degradation=blur_estimated", "kernel_estimator=classical"]),
    "blind_in_loop": (False, ["degradation=blur_estimated", "kernel_estimator=in_loop"]),
    "video": (
        True,
        [
            "task=video",
            "dataset=bsd_synthetic",
            "dataset.kernel.size=5",
            "dataset.limit=null",
            "degradation=blur_estimated",
            "kernel_estimator=classical",
            "kernel_estimator.kernel_size=5",
            "temporal=independent,all",
            "temporal.t_star=500",
        ],
    ),
    "video_in_loop": (
        False,
        [
            "task=video",
            "dataset=bsd_synthetic",
            "dataset.kernel.size=5",
            "dataset.limit=null",
            "degradation=blur_estimated",
            "kernel_estimator=in_loop",
            "temporal=all",
            "temporal.t_star=500",
        ],
    ),
}
# Fields that differ between two identical runs (clocks) or machines (where files are).
IGNORED = {"seconds", "estimation_seconds", "seconds_per_image", "seconds_per_frame", "nfe_per_s"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_SILENT="true")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def record(out: Path, only: list[str] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # One tree for every recording: its path is part of the runs' config_hash.
    bsd = Path(tempfile.gettempdir()) / "ddrm_exp_regress_bsd"
    if not bsd.exists():
        cmd = [sys.executable, "-m", "ddrm_exp.datasets.bsd_mini", str(bsd)]
        # Whole-pixel blur: the tree every earlier recording used (bsd_mini's old default).
        args = ["--sequences", "2", "--frames", "3", "--blur", "nearest"]
        subprocess.run([*cmd, *args], check=True, env=_env())
    for name, (multi, overrides) in RUNS.items():
        if only and name not in only:
            continue
        where = out / name
        data = [f"dataset.root={bsd}"] if any("bsd" in o for o in overrides) else []
        dirs = (
            [f"hydra.sweep.dir={where}", "hydra.sweep.subdir=${hydra.job.num}"]
            if multi
            else [f"hydra.run.dir={where}"]
        )
        args = [*(["-m"] if multi else []), *FAST, *overrides, *data, *dirs, "overwrite=true"]
        print(f"[{name}] python -m ddrm_exp {' '.join(args)}", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "ddrm_exp", *args],
            cwd=out,
            env=_env(),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            sys.exit(f"[{name}] failed:\n{proc.stderr[-4000:]}")


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _records(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted((_clean(r) for r in lines), key=lambda r: (r["index"], r.get("position", 0)))


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if (
            path.is_file()
            and path.suffix in (".png", ".jsonl", ".npy")
            or path.name == "summary.json"
        ):
            yield path.relative_to(root)


def _diff(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        # The writers' key order is part of the files (results.jsonl is read by people too).
        if set(a) == set(b) and list(a) != list(b):
            out.append(f"{where}: key order {list(a)} != {list(b)}")
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'B' if k not in a else 'A'}")
            else:
                _diff(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _diff(u, v, f"{where}[{i}]", out)
    elif a != b:
        out.append(f"{where}: {a!r} != {b!r}")


def compare(a: Path, b: Path) -> int:
    fa, fb = set(_files(a)), set(_files(b))
    problems = [f"only in {a}: {p}" for p in sorted(fa - fb)]
    problems += [f"only in {b}: {p}" for p in sorted(fb - fa)]
    checked = {"records": 0, "summaries": 0, "binary": 0}
    for rel in sorted(fa & fb):
        if rel.suffix == ".jsonl":
            ra, rb = _records(a / rel), _records(b / rel)
            if len(ra) != len(rb):
                problems.append(f"{rel}: {len(ra)} vs {len(rb)} records")
            for x, y in zip(ra, rb, strict=False):
                _diff(x, y, f"{rel}#{x['index']}", problems)
            checked["records"] += len(ra)
        elif rel.name == "summary.json":
            sa, sb = (_clean(json.loads((d / rel).read_text())) for d in (a, b))
            _diff(sa, sb, str(rel), problems)
            checked["summaries"] += 1
        else:
            if (a / rel).read_bytes() != (b / rel).read_bytes():
                problems.append(f"{rel}: bytes differ")
            checked["binary"] += 1
    for p in problems[:200]:
        print(p)
    print(
        f"compared {checked['records']} records, {checked['summaries']} summaries, "
        f"{checked['binary']} PNG/npy files: {len(problems)} difference(s)"
    )
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the fixed set of runs into DIR")
    rec.add_argument("dir", type=Path)
    rec.add_argument("--only", nargs="*", choices=sorted(RUNS), help="a subset of the runs")
    cmp_ = sub.add_parser("compare", help="compare two recordings; exit 1 on a difference")
    cmp_.add_argument("a", type=Path)
    cmp_.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.dir.resolve(), args.only)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    raise SystemExit(main())
