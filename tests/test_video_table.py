"""The video table (scripts/make_tables.py --table video): rows never pool runs of different
estimator or dataset settings, differences by frame and by sequence, what restored each frame."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import table_row

from ddrm_exp.report import build_table, get_spec, load_records

TEMPORAL = {
    "independent": {"name": "independent", "kernel_propagation": False},
    "all": {
        "name": "all",
        "warm_start": True,
        "t_star": 150,
        "shared_noise": True,
        "kernel_propagation": True,
    },
}


def frame_line(
    index: int, sequence: str, psnr: float, blurry: float, temporal: str, **kernel: object
) -> dict[str, object]:
    return {
        "index": index,
        "name": f"{sequence}/{index:08d}",
        "task": "video",
        "sequence": sequence,
        "frame": index,
        "degradation": "blur_estimated",
        "sampler": "ddrm",
        "sampler_params": {"timesteps": 20},
        "sigma_y": 0.0,
        "assumed_sigma_y": 0.02,
        "seed": 0,
        "nfe": 20 if kernel.get("returned", "restored") == "restored" else 0,
        "seconds": 0.0,
        "restored": {"psnr": psnr, "ssim": 0.9},
        "measurement": {"psnr": blurry},
        "kernel": {"assumed": "estimated", "estimator": "classical_valid", **kernel},
        "temporal": {**TEMPORAL[temporal], "flicker": 0.01, "warping_error": 0.001},
    }


def write_run(
    run_dir: Path, lines: list[dict[str, object]], root: str = "/trees/a", warm_iters: int = 5
) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "results.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (run_dir / "config_resolved.yaml").write_text(
        f"dataset:\n  root: {root}\n  split: test\n"
        f"kernel_estimator:\n  iterations: 5\n  warm_iters: {warm_iters}\n  num_threads: null\n"
    )
    return run_dir


def run_of(temporal: str, restored: list[float], blurry: float = 30.0) -> list[dict[str, object]]:
    return [frame_line(i, "000", p, blurry, temporal) for i, p in enumerate(restored)]


def with_flicker(lines: list[dict[str, object]], values: list[float]) -> list[dict[str, object]]:
    for line, value in zip(lines, values, strict=True):
        line["temporal"] = {**line["temporal"], "flicker": value}  # type: ignore[dict-item]
    return lines


def video_table(*run_dirs: Path) -> str:
    return build_table(get_spec("video"), load_records(run_dirs)).markdown


def test_runs_of_other_warm_iters_are_rows_of_their_own(tmp_path: Path) -> None:
    independent = write_run(tmp_path / "i", run_of("independent", [30.0, 31.0, 32.0]))
    short = write_run(tmp_path / "a5", run_of("all", [30.0, 31.0, 32.0]))
    long = write_run(tmp_path / "a40", run_of("all", [31.0, 32.0, 33.0]), warm_iters=40)
    text = video_table(independent, short, long)
    # Before: one "all" row, the second run's frames dropped as repeats of the first's.
    rows = [line for line in text.splitlines() if line.startswith("| all")]
    assert len(rows) == 2, text
    row = table_row(text, "| temporal", "| all (t*=150) kernel_estimator.warm_iters=40")
    assert row["ΔPSNR vs independent"].startswith("1.00 (n=3")
    row = table_row(text, "| temporal", "| all (t*=150) kernel_estimator.warm_iters=5")
    assert row["ΔPSNR vs independent"].startswith("0.00")
    # warm_iters changes nothing without kernel propagation: the reference keeps its name.
    assert "| independent |" in text


def test_each_dataset_is_paired_with_its_own_independent_run(tmp_path: Path) -> None:
    dirs = [
        write_run(tmp_path / "ia", run_of("independent", [30.0, 30.0, 30.0])),
        write_run(tmp_path / "aa", run_of("all", [31.0, 31.0, 31.0])),
        write_run(tmp_path / "ib", run_of("independent", [20.0, 20.0, 20.0]), root="/trees/b"),
        write_run(tmp_path / "ab", run_of("all", [19.0, 19.0, 19.0]), root="/trees/b"),
    ]
    text = video_table(*dirs)
    a = table_row(text, "| temporal", "| all (t*=150) dataset.root=/trees/a")
    b = table_row(text, "| temporal", "| all (t*=150) dataset.root=/trees/b")
    assert a["ΔPSNR vs independent"].startswith("1.00") and a["PSNR"].startswith("31.00")
    assert b["ΔPSNR vs independent"].startswith("-1.00") and b["PSNR"].startswith("19.00")


def test_differences_with_the_blurry_frames_by_frame_and_by_sequence(tmp_path: Path) -> None:
    # Sequence 000: three frames 1 dB above blurry; 001: one frame 0.5 dB below it.
    lines = [frame_line(i, "000", 31.0, 30.0, "independent") for i in range(3)]
    lines.append(frame_line(3, "001", 29.5, 30.0, "independent"))
    text = video_table(write_run(tmp_path / "i", lines))
    row = table_row(text, "| temporal", "| independent")
    by_frame, by_sequence = row["− blurry"].split(" [")
    assert by_frame.startswith("0.62")  # (3 x 1 − 0.5) / 4 frames
    assert by_sequence.startswith("0.25")  # (1 − 0.5) / 2 sequences
    assert row["frames > 0.2 dB below blurry"] == "1"


def test_restored_by_counts_the_frames_a_fallback_returned(tmp_path: Path) -> None:
    lines = [
        frame_line(0, "000", 31.0, 30.0, "independent", returned="richardson_lucy"),
        frame_line(1, "000", 31.0, 30.0, "independent", returned="richardson_lucy"),
        frame_line(2, "000", 31.0, 30.0, "independent", returned="restored"),
    ]
    row = table_row(video_table(write_run(tmp_path / "i", lines)), "| temporal", "| independent")
    assert row["restored by"] == "RL 2, ddrm 1"
    # a noisy frame the sampler denoised with a delta kernel is named as such
    lines[1] = frame_line(1, "000", 31.0, 30.0, "independent", returned="denoised")
    row = table_row(video_table(write_run(tmp_path / "d", lines)), "| temporal", "| independent")
    assert row["restored by"] == "RL 1, ddrm δ-kernel 1, ddrm 1"
    assert row["NFE / frame"] == "6.7"


def test_one_estimator_setting_adds_no_label(tmp_path: Path) -> None:
    # As a video_bsd sweep makes them: the same estimator for every temporal setting.
    independent = write_run(tmp_path / "i", run_of("independent", [30.0, 31.0]))
    propagated = write_run(tmp_path / "a", run_of("all", [30.5, 31.5]))
    text = video_table(independent, propagated)
    row = table_row(text, "| temporal", "| all (t*=150) |")
    assert row["ΔPSNR vs independent"].startswith("0.50")


def test_flicker_difference_is_paired_by_frame(tmp_path: Path) -> None:
    base = with_flicker(run_of("independent", [30.0] * 3), [0.02, 0.04, 0.06])
    steadier = with_flicker(run_of("all", [30.0] * 3), [0.01, 0.03, 0.05])
    text = video_table(write_run(tmp_path / "i", base), write_run(tmp_path / "a", steadier))
    row = table_row(text, "| temporal", "| all (t*=150) |")
    # Every frame 0.01 steadier; unpaired, the means' CIs (± 0.05) would hide it.
    assert row["Δflicker vs independent"].startswith("-0.01000 (n=3")
