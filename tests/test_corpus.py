"""scripts/build_corpus.py: the reviewed list keeps splits apart by picture and by source, the
near-duplicate guard catches a picture at another resolution, licences come from DEP-5 files;
scripts/train_prior.py reads only a corpus' train split."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddrm_exp.datasets.samples import SPLITS as SAMPLE_SPLITS

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


corpus = load_script("build_corpus")


def test_each_picture_has_one_split_and_test_has_sources_never_trained_on() -> None:
    keys = [(p.source, p.name) for p in corpus.PICTURES]
    assert len(keys) == len(set(keys)), "a picture is listed twice"
    train_sources = {p.source for p in corpus.PICTURES if p.split == "train"}
    tuning_sources = {p.source for p in corpus.PICTURES if p.split in ("train", "val")}
    test_only = {p.source for p in corpus.PICTURES if p.split == "test"} - tuning_sources
    assert test_only, "the test split needs a source used for nothing else"
    assert "opencv-doc" in test_only
    # Every validation source is also trained on (validation measures generalisation to new
    # pictures of known sources); the test-only sources measure it to new sources.
    assert {p.source for p in corpus.PICTURES if p.split == "val"} <= train_sources
    assert {p.split for p in corpus.PICTURES} == {"train", "val", "test"}


def test_the_held_out_sample_photos_are_not_in_the_corpus() -> None:
    names = {p.name for p in corpus.PICTURES if p.source == "wheel:scikit-image"}
    assert not names & set(SAMPLE_SPLITS["heldout"])


def test_enough_test_images_for_the_quality_table() -> None:
    # Two evaluation views per test picture; the issue asks for at least 48 test images.
    assert 2 * sum(p.split == "test" for p in corpus.PICTURES) >= 48


def _photo(seed: int, size: tuple[int, int] = (200, 150)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.random((size[1] // 10, size[0] // 10, 3))
    return Image.fromarray((base * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)


def test_near_duplicates_across_splits_are_found_at_another_resolution() -> None:
    a = _photo(0)
    a_small = a.resize((100, 75), Image.Resampling.LANCZOS)
    b = _photo(1)
    thumbs = {
        "a": corpus.thumbnail(a),
        "a_small": corpus.thumbnail(a_small),
        "b": corpus.thumbnail(b),
    }
    found = corpus.cross_split_duplicates(thumbs, {"a": "train", "a_small": "test", "b": "val"})
    assert [(x, y) for x, y, _ in found] == [("a", "a_small")]
    # The same pair inside one split is not a leak.
    assert not corpus.cross_split_duplicates(thumbs, {"a": "train", "a_small": "train", "b": "val"})


def test_eval_views_are_the_whole_short_side_and_its_centre_half() -> None:
    img = Image.new("RGB", (300, 200), (0, 0, 0))
    img.paste((255, 255, 255), (100, 50, 200, 150))  # a 100x100 white centre = half the short side
    views = corpus.eval_views(img)
    assert set(views) == {"full", "detail"}
    assert all(v.size == (64, 64) for v in views.values())
    detail = np.asarray(views["detail"], dtype=float)
    assert detail.min() > 200  # the detail view is the white centre only
    full = np.asarray(views["full"], dtype=float)
    assert full[0, 0, 0] < 10 and full[32, 32, 0] > 200


def test_deb_licence_takes_the_last_matching_stanza(tmp_path: Path) -> None:
    doc = tmp_path / "usr/share/doc/pkg"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: someone\nLicense: GPL-2+\n\n"
        "Files: 16.04/photo_by_X.jpg\n 16.04/other.jpg\nCopyright: X\nLicense: CC-BY-4.0\n\n"
        "Files: nature/*.jpg\nCopyright: Y\nLicense: CC0-1.0\n"
    )
    assert (
        corpus.deb_licence(tmp_path, "pkg", "usr/share/backgrounds/photo_by_X.jpg") == "CC-BY-4.0"
    )
    assert corpus.deb_licence(tmp_path, "pkg", "usr/share/backgrounds/other.jpg") == "CC-BY-4.0"
    assert corpus.deb_licence(tmp_path, "pkg", "usr/share/b/nature/leaf.jpg") == "CC0-1.0"
    assert corpus.deb_licence(tmp_path, "pkg", "usr/share/b/logo.png") == "GPL-2+"
    assert corpus.deb_licence(tmp_path, "nopkg", "x.png").startswith("unknown")


def _write_corpus(root: Path) -> None:
    entries = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        rel = f"pictures/src/p{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        colour = (255, 0, 0) if split == "train" else (0, 0, 255)
        img = Image.new("RGB", (40, 32), colour)
        gray = i == 1
        if gray:
            img = img.convert("L").convert("RGB")
        img.save(root / rel)
        entries.append({"id": f"src__p{i}", "split": split, "gray": gray, "stored": rel})
    (root / "manifest.json").write_text(json.dumps({"pictures": entries}))


def test_training_reads_only_the_train_split(tmp_path: Path) -> None:
    train_prior = load_script("train_prior")
    _write_corpus(tmp_path)
    colour, gray = train_prior.corpus_photos(tmp_path)
    assert len(colour) == 1 and len(gray) == 1
    # val/test pictures are blue; only red (train) pixels may reach training
    assert all(p[..., 2].max() == 0 for p in colour)


@pytest.mark.slow
def test_train_prior_runs_on_a_corpus(tmp_path: Path) -> None:
    _write_corpus(tmp_path / "corpus")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_prior.py"),
            "model.image_size=16",
            "model.network.ch=32",
            "model.network.ch_mult=[1,2]",
            "model.network.num_res_blocks=1",
            "train.batch_size=2",
            "train.precision=fp32",
            "device=cpu",
            "train.steps=2",
            "data.min_crop_frac=0.5",
            "train.snapshot_every=1",
            f"data.corpus={tmp_path / 'corpus'}",
            f"out_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    snaps = sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir())
    assert snaps == ["ema_000001.safetensors", "ema_000002.safetensors"]


def test_train_prior_refuses_a_folder_without_manifest(tmp_path: Path) -> None:
    train_prior = load_script("train_prior")
    from ddrm_exp.errors import ConfigError

    with pytest.raises(ConfigError, match="build_corpus"):
        train_prior.corpus_photos(tmp_path)
