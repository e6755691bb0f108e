"""Datasets: sample photos, folders of images, LSUN (folder layout, and LMDB via a fake)."""

from __future__ import annotations

import importlib.util
import io
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ddrm_exp.datasets import (
    ImageFolderDataset,
    LSUNDataset,
    SampleImages,
    load_sample_photos,
)
from ddrm_exp.datasets.samples import SPLITS
from ddrm_exp.datasets.transforms import resize_center_crop
from ddrm_exp.errors import ConfigError


def _write_png(path: Path, size: tuple[int, int], value: int) -> None:
    """A (W, H) RGB image whose red channel is ``value`` everywhere, to identify it later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    arr[..., 0] = value
    arr[..., 1] = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :]
    Image.fromarray(arr).save(path)


def _red(item: dict[str, Any]) -> int:
    return int(round((float(item["image"][0].mean()) + 1.0) * 127.5))


# --------------------------------------------------------------------------- samples


def test_samples_heldout_images() -> None:
    ds = SampleImages(image_size=32)
    assert ds.names == ["astronaut", "chelsea", "coffee", "rocket"]
    assert len(ds) == 4
    for i in range(len(ds)):
        item = ds[i]
        img = item["image"]
        assert img.shape == (3, 32, 32)
        assert img.dtype == torch.float32
        assert float(img.min()) >= -1.0 and float(img.max()) <= 1.0
        assert item["index"] == i
        assert item["name"] == ds.names[i]
        assert float(img.std()) > 0.05  # real photo content, not a blank


def test_samples_rectangular_size_and_collate() -> None:
    ds = SampleImages(image_size=[24, 40], limit=2)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 24, 40)
    assert batch["index"].tolist() == [0, 1]
    assert batch["name"] == ["astronaut", "chelsea"]


def test_samples_splits_disjoint_and_complete() -> None:
    heldout = {n for n, _ in load_sample_photos("heldout")}
    train = {n for n, _ in load_sample_photos("train")}
    assert heldout == {"astronaut", "chelsea", "coffee", "rocket"}
    assert train == {
        "hubble_deep_field",
        "ihc",
        "motorcycle_left",
        "motorcycle_right",
        "retina",
    }
    assert not heldout & train
    assert set(SPLITS["all"]) == heldout | train
    for _, arr in load_sample_photos("all"):
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3


def test_samples_start_limit_and_bad_split() -> None:
    ds = SampleImages(image_size=16, split="train", start=1, limit=2)
    assert ds.names == ["ihc", "motorcycle_left"]
    with pytest.raises(ConfigError, match="heldout.*train|all.*heldout"):
        SampleImages(image_size=16, split="test")
    with pytest.raises(ConfigError, match="start"):
        SampleImages(image_size=16, start=4)


def test_samples_resize_false_needs_matching_size() -> None:
    with pytest.raises(ConfigError, match="dataset.resize=true"):
        SampleImages(image_size=64, resize=False)
    ds = SampleImages(image_size=512, resize=False, limit=1)  # astronaut is 512x512
    assert ds[0]["image"].shape == (3, 512, 512)


def test_transform_is_short_side_resize_then_centre_crop() -> None:
    # A 40x20 (WxH) image with a distinct left, middle and right third.
    arr = np.zeros((20, 60, 3), dtype=np.uint8)
    arr[:, 20:40] = 200
    out = resize_center_crop(Image.fromarray(arr), (10, 10))
    assert out.size == (10, 10)
    # Short side 20 -> 10, so 60 -> 30, and the centre 10 columns are the bright middle third.
    assert np.asarray(out)[:, 2:8].min() > 150


# --------------------------------------------------------------------------- folder


@pytest.fixture()
def image_tree(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    _write_png(root / "b.png", (16, 16), 20)
    _write_png(root / "a.png", (16, 16), 10)
    _write_png(root / "sub" / "c.png", (16, 16), 30)
    _write_png(root / "sub" / "deeper" / "d.png", (16, 16), 40)
    Image.fromarray(np.full((16, 16, 3), 50, np.uint8)).save(root / "e.jpg", quality=100)
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_sorted_recursive(image_tree: Path) -> None:
    ds = ImageFolderDataset(image_size=16, root=str(image_tree))
    assert ds.names == ["a", "b", "e", "sub/c", "sub/deeper/d"]
    assert [_red(ds[i]) for i in range(4)] == [10, 20, 50, 30]
    assert ds[4]["image"].shape == (3, 16, 16)


def test_folder_start_and_limit(image_tree: Path) -> None:
    ds = ImageFolderDataset(image_size=16, root=image_tree, start=1, limit=2)
    assert ds.names == ["b", "e"]
    assert [ds[i]["index"] for i in range(len(ds))] == [0, 1]
    assert ImageFolderDataset(image_size=16, root=image_tree, start=3).names == [
        "sub/c",
        "sub/deeper/d",
    ]
    with pytest.raises(ConfigError, match="limit"):
        ImageFolderDataset(image_size=16, root=image_tree, limit=0)


def test_folder_resize(image_tree: Path) -> None:
    _write_png(image_tree / "z_big.png", (40, 30), 90)
    ds = ImageFolderDataset(image_size=8, root=image_tree)
    assert all(ds[i]["image"].shape == (3, 8, 8) for i in range(len(ds)))
    assert _red(ds[len(ds) - 1]) == 90


def test_folder_resize_false_error_names_file(image_tree: Path) -> None:
    _write_png(image_tree / "z_big.png", (40, 30), 90)
    with pytest.raises(ConfigError) as info:
        ImageFolderDataset(image_size=16, root=image_tree, resize=False)
    msg = str(info.value)
    assert "z_big.png" in msg
    assert "40x30" in msg and "16x16" in msg
    assert "dataset.resize=true" in msg
    # The images of the right size alone are accepted without resizing.
    ok = ImageFolderDataset(image_size=16, root=image_tree, resize=False, limit=5)
    assert len(ok) == 5


def test_folder_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(ConfigError, match="No images.*empty"):
        ImageFolderDataset(image_size=16, root=empty)
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="nope.*does not exist"):
        ImageFolderDataset(image_size=16, root=missing)
    with pytest.raises(ConfigError, match="dataset.root"):
        ImageFolderDataset(image_size=16, root=None)


def test_folder_name_clash_keeps_extension(tmp_path: Path) -> None:
    _write_png(tmp_path / "x.png", (8, 8), 1)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.bmp")
    ds = ImageFolderDataset(image_size=8, root=tmp_path)
    assert ds.names == ["x.bmp", "x.png"]


# --------------------------------------------------------------------------- lsun


def test_lsun_folder_layout(tmp_path: Path) -> None:
    root = tmp_path / "lsun_bedroom"
    for i in range(3):
        _write_png(root / "bedroom" / f"{i}.png", (32, 24), 10 * (i + 1))
    ds = LSUNDataset(image_size=16, root=root, format="folder", limit=2)
    assert ds.names == ["bedroom/0", "bedroom/1"]
    assert ds[1]["image"].shape == (3, 16, 16)
    assert _red(ds[1]) == 20


def test_lsun_missing_root_and_bad_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist.*<class>/\*\.png"):
        LSUNDataset(image_size=16, root=tmp_path / "missing")
    with pytest.raises(ConfigError, match="folder, lmdb"):
        LSUNDataset(image_size=16, root=tmp_path, format="zip")


@pytest.mark.skipif(importlib.util.find_spec("lmdb") is not None, reason="lmdb is installed")
def test_lsun_lmdb_without_lmdb_package(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pip install lmdb.*\[lsun\]"):
        LSUNDataset(image_size=16, root=tmp_path, format="lmdb")


class _FakeTxn:
    def __init__(self, store: dict[bytes, bytes]) -> None:
        self.store = store

    def __enter__(self) -> _FakeTxn:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get(self, key: bytes) -> bytes:
        return self.store[key]


class _FakeEnv:
    def __init__(self, store: dict[bytes, bytes]) -> None:
        self.store = store

    def begin(self, write: bool = False) -> _FakeTxn:
        return _FakeTxn(self.store)


def _fake_lsun_class(store: dict[bytes, bytes]) -> type:
    class FakeLSUN:
        """Mimics torchvision.datasets.LSUN with one class (the parts the wrapper uses)."""

        def __init__(self, root: str, classes: list[str]) -> None:
            assert classes == ["bedroom_val"]
            db = types.SimpleNamespace(env=_FakeEnv(store), keys=list(store))
            self.dbs = [db]

        def __len__(self) -> int:
            return len(self.dbs[0].keys)

        def __getitem__(self, i: int) -> tuple[Image.Image, int]:
            buf = self.dbs[0].env.store[self.dbs[0].keys[i]]
            return Image.open(io.BytesIO(buf)).convert("RGB"), 0

    return FakeLSUN


def test_lsun_lmdb_through_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    store: dict[bytes, bytes] = {}
    for i, (w, h) in enumerate([(24, 16), (16, 16), (20, 16)]):
        arr = np.full((h, w, 3), 40 * (i + 1), np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        store[f"{i:040x}".encode()] = buf.getvalue()
    (tmp_path / "bedroom_val_lmdb").mkdir()
    monkeypatch.setitem(sys.modules, "lmdb", types.ModuleType("lmdb"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(torchvision.datasets, "LSUN", _fake_lsun_class(store))

    ds = LSUNDataset(image_size=8, root=tmp_path, format="lmdb", start=1)
    assert len(ds) == 2
    assert ds.names == [f"{1:040x}", f"{2:040x}"]
    assert ds[0]["image"].shape == (3, 8, 8)
    assert _red(ds[1]) == 120
    with pytest.raises(ConfigError, match="20x16.*dataset.resize=true"):
        LSUNDataset(image_size=16, root=tmp_path, format="lmdb", start=1, resize=False)
    with pytest.raises(ConfigError, match="bedroom_train_lmdb"):
        LSUNDataset(image_size=16, root=tmp_path, format="lmdb", split="train")
