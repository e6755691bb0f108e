"""BSD datasets: the miniature tree, real Blur/Sharp pairs, and the synthetic-kernel variant."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import compose_cfg
from hydra.utils import instantiate
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from ddrm_exp.config import instantiate_config
from ddrm_exp.datasets import BSDDataset, BSDSyntheticDataset
from ddrm_exp.datasets.bsd import blur_reflect, natural_key
from ddrm_exp.datasets.bsd_mini import (
    MOTION_FILE,
    read_motion,
    read_photo_folder,
    seeded_velocities,
    write_mini_bsd,
)
from ddrm_exp.datasets.bsd_mini import main as mini_main
from ddrm_exp.errors import ConfigError

SIZE = (48, 64)  # (H, W) of the mini frames: small, and not square, to exercise the crop


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bsd")
    write_mini_bsd(root, sequences=3, frames=5, size=SIZE, blur="nearest")
    return root


@pytest.fixture(scope="module")
def still_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree whose Blur frames are copies of the Sharp frames."""
    root = tmp_path_factory.mktemp("bsd_still")
    write_mini_bsd(root, sequences=2, frames=3, size=SIZE, motion=False)
    return root


def _rel_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


# ----------------------------------------------------------------------------- kernel API


def _fake_kernel2d_from_spec(spec: Any, generator: Any = None, what: str = "kernel") -> Tensor:
    if not isinstance(spec, Mapping):
        k = torch.as_tensor(spec, dtype=torch.float64)
        return k / k.sum()
    if "type" not in spec:
        raise ConfigError(f"{what}: no type")
    size = int(spec["size"])
    k = torch.rand(size, size, generator=generator, dtype=torch.float64) ** 4
    return k / k.sum()


def _fake_blur_circular(x: Tensor, kernel: Tensor) -> Tensor:
    """Circular convolution with the kernel's centre at (kh//2, kw//2)."""
    h, w = x.shape[-2:]
    kh, kw = kernel.shape
    pad = torch.zeros(h, w, dtype=torch.float64)
    pad[:kh, :kw] = kernel
    pad = torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
    y = torch.fft.ifft2(torch.fft.fft2(x.to(torch.float64)) * torch.fft.fft2(pad)).real
    return y.to(x.dtype)


@pytest.fixture
def kernel_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """The project's 2-D kernel and FFT blur, or stand-ins with the same API until they land."""
    fakes = {
        "kernels2d": ("kernel2d_from_spec", _fake_kernel2d_from_spec),
        "fft_blur": ("blur_circular", _fake_blur_circular),
    }
    for module, (attr, fake) in fakes.items():
        full = f"ddrm_exp.degradations.{module}"
        if importlib.util.find_spec(full) is None:
            stand_in = types.ModuleType(full)
            setattr(stand_in, attr, fake)
            monkeypatch.setitem(sys.modules, full, stand_in)
    kernels2d = importlib.import_module("ddrm_exp.degradations.kernels2d")
    fft_blur = importlib.import_module("ddrm_exp.degradations.fft_blur")
    yield kernels2d.kernel2d_from_spec, fft_blur.blur_circular


# --------------------------------------------------------------------------- mini tree


def test_mini_tree_layout(tmp_path: Path) -> None:
    split_dir = write_mini_bsd(tmp_path, sequences=2, frames=3, size=(40, 56))
    assert split_dir == tmp_path / "BSD_1ms8ms" / "test"
    expected = {
        f"BSD_1ms8ms/test/{s:03d}/{kind}/RGB/{t:08d}.png"
        for s in range(2)
        for kind in ("Blur", "Sharp")
        for t in range(3)
    }
    assert _rel_files(tmp_path) == expected | {f"BSD_1ms8ms/test/{MOTION_FILE}"}
    for rel in expected:
        with Image.open(tmp_path / rel) as img:
            assert (img.mode, img.size) == ("RGB", (56, 40))


def test_mini_tree_is_a_blurred_video(mini_root: Path, tmp_path: Path) -> None:
    seq = mini_root / "BSD_1ms8ms" / "test" / "000"
    sharp = [_read(seq / "Sharp/RGB" / f"{t:08d}.png") for t in range(5)]
    blur = [_read(seq / "Blur/RGB" / f"{t:08d}.png") for t in range(5)]
    # the crop moves between frames, and the long exposure smooths the frame
    assert np.abs(sharp[1] - sharp[0]).mean() > 1.0
    for s, b in zip(sharp, blur, strict=True):
        assert np.abs(b - s).mean() > 0.5
        assert np.abs(np.diff(b, axis=1)).mean() < np.abs(np.diff(s, axis=1)).mean()
    # deterministic: the same call writes the same pixels
    again = write_mini_bsd(tmp_path, sequences=1, frames=5, size=SIZE, blur="nearest")
    assert np.array_equal(_read(again / "000/Blur/RGB/00000001.png"), blur[1])


def test_mini_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = mini_main([str(out), "--sequences", "1", "--frames", "2", "--height", "32"])
    assert rc == 0
    assert "dataset.root=" in capsys.readouterr().out
    assert len(_rel_files(out)) == 5  # 2 frames x Blur/Sharp + motion.json
    assert mini_main([str(out), "--frames", "0"]) == 2


def _convolve_valid(sharp: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``Σ_q k[q] sharp[p - q + origin]`` on the pixels whose support lies inside the frame."""
    r = kernel.shape[0] // 2
    h, w = sharp.shape[:2]
    out = np.zeros((h - 2 * r, w - 2 * r, 3))
    for a in range(kernel.shape[0]):
        for b in range(kernel.shape[1]):
            if kernel[a, b]:
                dy, dx = r - a, r - b  # p - q + origin
                out += kernel[a, b] * sharp[r + dy : h - r + dy, r + dx : w - r + dx]
    return out


@pytest.fixture(scope="module")
def subpixel_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Continuous motion: bilinear sub-frames, seeded fractional velocities."""
    root = tmp_path_factory.mktemp("bsd_subpixel")
    write_mini_bsd(
        root,
        sequences=3,
        frames=5,
        size=SIZE,
        blur="subpixel",
        velocities=seeded_velocities(3, seed=7),
    )
    return root


@pytest.mark.parametrize("tree", ["mini_root", "subpixel_root"])
def test_mini_tree_knows_each_frames_kernel(tree: str, request: pytest.FixtureRequest) -> None:
    split_dir = request.getfixturevalue(tree) / "BSD_1ms8ms" / "test"
    motion = read_motion(split_dir)
    assert sorted(motion) == ["000", "001", "002"]
    for name, kernels in motion.items():
        assert len(kernels) == 5
        for t, k in enumerate(kernels):
            assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
            assert k.min() >= 0 and abs(k.sum() - 1) < 1e-12
            sharp = _read(split_dir / name / "Sharp/RGB" / f"{t:08d}.png")
            blur = _read(split_dir / name / "Blur/RGB" / f"{t:08d}.png")
            r = k.shape[0] // 2
            # Away from the border (where the blur reaches outside the crop) Blur is the kernel's
            # blur of Sharp up to the 8-bit rounding; the kernel one pixel off would not be.
            inner = blur[r : blur.shape[0] - r, r : blur.shape[1] - r]
            assert np.abs(inner - _convolve_valid(sharp, k)).max() <= 0.5 + 1e-9
            shifted = np.pad(k, 1)[1:-1, :-2]
            assert np.abs(inner - _convolve_valid(sharp, shifted)).max() > 2.0


def _pieces(support: np.ndarray) -> int:
    """8-connected pieces of a boolean kernel support."""
    seen = np.zeros_like(support)
    pieces = 0
    for start in zip(*np.nonzero(support), strict=True):
        if seen[start]:
            continue
        pieces += 1
        stack = [start]
        while stack:
            a, b = stack.pop()
            if not (0 <= a < support.shape[0] and 0 <= b < support.shape[1]):
                continue
            if seen[a, b] or not support[a, b]:
                continue
            seen[a, b] = True
            stack += [(a + i, b + j) for i in (-1, 0, 1) for j in (-1, 0, 1)]
    return pieces


def test_subpixel_kernels_are_continuous_segments(mini_root: Path, subpixel_root: Path) -> None:
    """Steady motion draws one unbroken segment; whole-pixel sub-frames rounded half to even
    draw dotted ones (the reason ``subpixel`` exists)."""
    sub = read_motion(subpixel_root / "BSD_1ms8ms" / "test")
    assert all(_pieces(k > 0) == 1 for ks in sub.values() for k in ks)
    nearest = read_motion(mini_root / "BSD_1ms8ms" / "test")
    assert any(_pieces(k > 0) > 1 for ks in nearest.values() for k in ks)
    meta = json.loads((subpixel_root / "BSD_1ms8ms" / "test" / MOTION_FILE).read_text())
    lengths = [math.hypot(*seq["velocity"]) for seq in meta["sequences"].values()]
    assert all(1.5 <= n <= 4.5 for n in lengths) and meta["sequences"]["000"]["blur"] == "subpixel"


def test_subpixel_blur_is_centred_on_sharp(subpixel_root: Path) -> None:
    """Blur is the motion centred on the Sharp crop: each kernel's centre of mass is its origin
    (a kernel off by a fraction of a pixel is a shift between the pair no deblurring knows)."""
    for kernels in read_motion(subpixel_root / "BSD_1ms8ms" / "test").values():
        for k in kernels:
            r = k.shape[0] // 2
            yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
            assert abs((k * yy).sum()) < 1e-9 and abs((k * xx).sum()) < 1e-9


def test_mini_cli_motion_range(tmp_path: Path) -> None:
    out = tmp_path / "mild"
    args = [str(out), "--sequences", "4", "--frames", "1", "--height", "32", "--width", "32"]
    assert mini_main([*args, "--motion-seed", "3", "--motion-range", "0.5", "1"]) == 0
    meta = json.loads((out / "BSD_1ms8ms" / "test" / MOTION_FILE).read_text())
    lengths = [math.hypot(*seq["velocity"]) for seq in meta["sequences"].values()]
    assert all(0.5 - 1e-3 <= n <= 1 + 1e-3 for n in lengths)
    assert mini_main([*args, "--motion-seed", "3", "--motion-range", "2", "1"]) == 2


def test_mini_tree_refuses_fractional_whole_pixel_motion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="subpixel"):
        write_mini_bsd(
            tmp_path, sequences=1, frames=1, size=SIZE, blur="nearest", velocities=[(0.5, 2.0)]
        )
    with pytest.raises(ConfigError, match="blur="):
        write_mini_bsd(tmp_path, sequences=1, frames=1, size=SIZE, blur="box")


def test_still_tree_kernels_are_deltas(still_root: Path) -> None:
    motion = read_motion(still_root / "BSD_1ms8ms" / "test")
    assert all(k.shape == (1, 1) and k[0, 0] == 1 for ks in motion.values() for k in ks)


def test_read_motion_of_a_tree_without_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="motion.json"):
        read_motion(tmp_path)


def _write_photo(path: Path, rgb: tuple[int, int, int], mode: str = "RGB") -> None:
    pixels = np.zeros((60, 80, 3), dtype=np.uint8)
    pixels[...] = rgb
    pixels[:, 40:] //= 2  # an edge, so the frames are not flat
    img = Image.fromarray(pixels)
    (img.convert(mode) if mode != "RGB" else img).save(path)


def test_mini_cli_photos_come_from_the_folder(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    _write_photo(photos / "a_grey.png", (200, 200, 200), mode="L")  # skipped: BSD is colour
    _write_photo(photos / "b_red.png", (240, 10, 10))
    _write_photo(photos / "c_blue.jpg", (10, 10, 240))
    (photos / "notes.txt").write_text("not a photo")
    assert [name for name, _ in read_photo_folder(photos)] == ["b_red", "c_blue"]
    out = tmp_path / "tree"
    args = [str(out), "--sequences", "3", "--frames", "2", "--height", "24", "--width", "32"]
    assert mini_main([*args, "--photos", str(photos)]) == 0
    split_dir = out / "BSD_1ms8ms" / "test"
    # Sequences cycle over the colour photos in name order: red, blue, red.
    for seq, channel in (("000", 0), ("001", 2), ("002", 0)):
        frame = _read(split_dir / seq / "Sharp/RGB/00000000.png")
        assert int(frame.mean(axis=(0, 1)).argmax()) == channel
    assert read_motion(split_dir)["001"] and len(read_motion(split_dir)["001"]) == 2


def test_mini_cli_photos_folder_without_colour_photos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no colour"):
        read_photo_folder(empty)
    assert mini_main([str(tmp_path / "t1"), "--photos", str(empty)]) == 2
    assert "no colour" in capsys.readouterr().err
    grey = tmp_path / "grey"
    grey.mkdir()
    _write_photo(grey / "g.png", (90, 90, 90), mode="L")
    assert mini_main([str(tmp_path / "t2"), "--photos", str(grey)]) == 2
    assert mini_main([str(tmp_path / "t3"), "--photos", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "t1").exists() and not (tmp_path / "t2").exists()


# ------------------------------------------------------------------------------ loader


def test_loader_items(mini_root: Path) -> None:
    ds = BSDDataset(image_size=32, root=mini_root)
    assert len(ds) == 15
    assert ds.names[:2] == ["000/00000000", "000/00000001"]
    assert ds.names[-1] == "002/00000004"
    item = ds[6]
    assert set(item) == {"image", "measurement", "index", "name", "sequence", "frame"}
    assert (item["index"], item["name"], item["sequence"], item["frame"]) == (
        6,
        "001/00000001",
        "001",
        1,
    )
    for key in ("image", "measurement"):
        t = item[key]
        assert t.shape == (3, 32, 32) and t.dtype == torch.float32
        assert -1.0 <= float(t.min()) and float(t.max()) <= 1.0
    assert not torch.equal(item["image"], item["measurement"])
    assert ds[-1]["name"] == "002/00000004"
    with pytest.raises(IndexError):
        ds[15]
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["measurement"].shape == (4, 3, 32, 32)
    assert batch["frame"].tolist() == [0, 1, 2, 3]


def test_pairs_share_the_crop(still_root: Path) -> None:
    for crop, resize, size in [
        ("center", True, (32, 32)),
        ("center", True, (40, 24)),
        ("center", False, (30, 20)),
        ("none", True, (20, 36)),
        ("none", False, SIZE),
    ]:
        ds = BSDDataset(image_size=size, root=still_root, crop=crop, resize=resize)
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (3, *size)
            assert torch.equal(item["image"], item["measurement"]), (crop, resize, i)


def test_pairs_match_by_frame(tmp_path: Path) -> None:
    """Blur = inverted Sharp: a mix-up of frames or of crops would show."""
    root = tmp_path / "inv"
    split_dir = write_mini_bsd(root, sequences=2, frames=3, size=SIZE, motion=False)
    for path in split_dir.glob("*/Blur/RGB/*.png"):
        Image.fromarray((255 - _read(path)).astype(np.uint8)).save(path)
    ds = BSDDataset(image_size=(32, 40), root=root)
    for i in range(len(ds)):
        item = ds[i]
        # resampling rounds to 8 bits, so x and 255 - x may differ by one level
        assert torch.allclose(item["measurement"], -item["image"], atol=1.01 / 127.5)


def test_native_center_crop(mini_root: Path) -> None:
    ds = BSDDataset(image_size=(32, 40), root=mini_root, crop="center", resize=False, limit=1)
    arr = _read(mini_root / "BSD_1ms8ms/test/000/Blur/RGB/00000000.png")
    top, left = (SIZE[0] - 32) // 2, (SIZE[1] - 40) // 2
    want = torch.from_numpy(arr[top : top + 32, left : left + 40]).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(ds[0]["measurement"], want.float())


def test_selection(mini_root: Path) -> None:
    ds = BSDDataset(image_size=16, root=mini_root, stride=2)
    assert ds.names == [f"{s:03d}/{t:08d}" for s in range(3) for t in (0, 2, 4)]
    ds = BSDDataset(image_size=16, root=mini_root, sequences=["002", 0])
    assert [n.split("/")[0] for n in ds.names] == ["002"] * 5 + ["000"] * 5
    ds = BSDDataset(image_size=16, root=mini_root, sequences=1, stride=3, start=1, limit=5)
    assert ds.names == ["001/00000003"]
    ds = BSDDataset(image_size=16, root=mini_root, start=4, limit=3)
    assert ds.names == ["000/00000004", "001/00000000", "001/00000001"]
    assert [ds[i]["index"] for i in range(3)] == [0, 1, 2]


def test_exposure_spelling_and_root_forms(mini_root: Path) -> None:
    a = BSDDataset(image_size=16, root=mini_root, exposure="1ms_8ms", limit=2)
    b = BSDDataset(image_size=16, root=mini_root / "BSD_1ms8ms", limit=2)
    assert a.names == b.names == ["000/00000000", "000/00000001"]


def test_natural_order(tmp_path: Path) -> None:
    assert sorted(["10", "9", "a10", "a9", "100"], key=natural_key) == [
        "9",
        "10",
        "100",
        "a9",
        "a10",
    ]
    split_dir = tmp_path / "BSD_2ms16ms" / "valid"
    for seq in ("10", "2"):
        for kind in ("Blur", "Sharp"):
            folder = split_dir / seq / kind / "RGB"
            folder.mkdir(parents=True)
            for frame in ("9", "10", "100"):
                Image.new("RGB", (8, 8)).save(folder / f"{frame}.png")
    ds = BSDDataset(image_size=8, root=tmp_path, exposure="2ms16ms", split="valid")
    assert ds.names == ["2/9", "2/10", "2/100", "10/9", "10/10", "10/100"]
    assert [ds[i]["frame"] for i in range(3)] == [9, 10, 100]


# ------------------------------------------------------------------------------ errors


def test_missing_tree_names_the_layout(tmp_path: Path, mini_root: Path) -> None:
    layout = r"BSD_.*/<seq>/Blur/RGB/<frame>\.png"
    with pytest.raises(ConfigError, match=f"does not exist.*{layout}"):
        BSDDataset(image_size=16, root=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="dataset.root is not set"):
        BSDDataset(image_size=16, root=None)
    with pytest.raises(ConfigError, match=f"BSD_1ms8ms.*{layout}"):
        BSDDataset(image_size=16, root=tmp_path)  # exists, but holds no BSD_* folder
    with pytest.raises(ConfigError, match=f"BSD_\\* found: BSD_1ms8ms.*{layout}"):
        BSDDataset(image_size=16, root=mini_root, exposure="3ms24ms")
    with pytest.raises(ConfigError, match=f"found: test.*dataset.split.*{layout}"):
        BSDDataset(image_size=16, root=mini_root, split="train")


def test_broken_trees(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    split_dir = write_mini_bsd(root, sequences=2, frames=3, size=(16, 16))
    (split_dir / "001/Blur/RGB/00000002.png").rename(split_dir / "001/Blur/RGB/00000007.png")
    with pytest.raises(ConfigError, match=r"do not match.*00000002.*00000007.*Sharp/RGB"):
        BSDDataset(image_size=16, root=root)
    # only the broken sequence is refused
    assert len(BSDDataset(image_size=16, root=root, sequences=[0])) == 3
    for f in (split_dir / "001/Blur/RGB").iterdir():
        f.unlink()
    (split_dir / "001/Blur/RGB").rmdir()
    with pytest.raises(ConfigError, match=r"no Blur/RGB folder.*<seq>/Sharp/RGB/<frame>\.png"):
        BSDDataset(image_size=16, root=root)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"sequences": ["007"]}, r"dataset\.sequences has '007'.*available: 000, 001, 002"),
        ({"stride": 0}, r"dataset\.stride"),
        ({"crop": "random"}, r"dataset\.crop"),
        ({"split": "val"}, r"dataset\.split"),
        ({"start": 15}, r"dataset\.start"),
        ({"limit": 0}, r"dataset\.limit"),
        ({"image_size": 64, "resize": False}, r"at least the model size 64x64"),
        ({"image_size": 32, "resize": False, "crop": "none"}, r"exactly the model size"),
    ],
)
def test_bad_options(mini_root: Path, kwargs: dict[str, Any], needle: str) -> None:
    kwargs = {"image_size": 16, **kwargs}
    with pytest.raises(ConfigError, match=needle):
        BSDDataset(root=mini_root, **kwargs)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_measurement_is_the_blur(mini_root: Path, kernel_api: Any) -> None:
    _, blur_circular = kernel_api
    ds = BSDSyntheticDataset(
        image_size=32, root=mini_root, kernel={"type": "motion", "size": 9, "intensity": 0.5}
    )
    sharp_only = BSDDataset(image_size=32, root=mini_root)
    for i in (0, 7):
        item = ds[i]
        assert set(item) == {
            "image",
            "measurement",
            "kernel",
            "index",
            "name",
            "sequence",
            "frame",
        }
        k = item["kernel"]
        assert k.shape == (9, 9) and k.dtype == torch.float64
        assert abs(float(k.sum()) - 1.0) < 1e-9
        assert torch.equal(item["image"], sharp_only[i]["image"])
        want = blur_circular(item["image"].double().unsqueeze(0), k).reshape(3, 32, 32)
        assert item["measurement"].dtype == torch.float32
        assert torch.allclose(item["measurement"].double(), want, atol=1e-6)
        # a real blur, not the real Blur frame
        assert not torch.allclose(item["measurement"], item["image"], atol=1e-2)
        assert not torch.allclose(item["measurement"], sharp_only[i]["measurement"], atol=1e-2)


def test_synthetic_kernels_are_seeded(mini_root: Path, kernel_api: Any) -> None:
    spec = {"type": "motion", "size": 7, "intensity": 0.5}
    ds = BSDSyntheticDataset(image_size=16, root=mini_root, kernel=spec, seed=3)
    k = [ds[i]["kernel"] for i in range(len(ds))]
    assert all(torch.equal(k[0], k[t]) for t in range(5))  # one kernel per sequence
    assert not torch.equal(k[0], k[5]) and not torch.equal(k[5], k[10])
    again = BSDSyntheticDataset(image_size=16, root=mini_root, kernel=spec, seed=3)
    assert torch.equal(again[12]["kernel"], k[12])
    # a sequence's kernel does not depend on which frames or sequences are selected
    subset = BSDSyntheticDataset(
        image_size=16, root=mini_root, kernel=spec, seed=3, sequences=["002"], stride=2
    )
    assert torch.equal(subset[0]["kernel"], k[10])
    other = BSDSyntheticDataset(image_size=16, root=mini_root, kernel=spec, seed=4)
    assert not torch.equal(other[0]["kernel"], k[0])
    per_frame = BSDSyntheticDataset(
        image_size=16, root=mini_root, kernel=spec, seed=3, kernel_per="frame"
    )
    assert not torch.equal(per_frame[0]["kernel"], per_frame[1]["kernel"])
    assert torch.equal(per_frame[1]["kernel"], per_frame[1]["kernel"])


def test_synthetic_reflect_mode(mini_root: Path, kernel_api: Any) -> None:
    spec = {"type": "motion", "size": 5, "intensity": 0.5}
    circ = BSDSyntheticDataset(image_size=24, root=mini_root, kernel=spec, limit=1)
    refl = BSDSyntheticDataset(
        image_size=24, root=mini_root, kernel=spec, limit=1, blur_mode="reflect"
    )
    a, b = circ[0], refl[0]
    assert torch.equal(a["kernel"], b["kernel"])
    # same convolution away from the borders, different at them
    inner = (slice(None), slice(2, -2), slice(2, -2))
    assert torch.allclose(a["measurement"][inner], b["measurement"][inner], atol=1e-5)
    assert not torch.allclose(a["measurement"], b["measurement"], atol=1e-3)
    # a centred delta leaves the image alone
    delta = torch.zeros(5, 5, dtype=torch.float64)
    delta[2, 2] = 1
    x = a["image"].double().unsqueeze(0)
    assert torch.allclose(blur_reflect(x, delta), x)


def test_synthetic_given_kernel(mini_root: Path, kernel_api: Any) -> None:
    given = [[0.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 0.0]]
    ds = BSDSyntheticDataset(image_size=16, root=mini_root, kernel=given, kernel_per="frame")
    want = torch.tensor(given, dtype=torch.float64) / 6
    assert all(torch.allclose(ds[i]["kernel"], want) for i in (0, 9))


def test_synthetic_bad_options(mini_root: Path, kernel_api: Any) -> None:
    with pytest.raises(ConfigError, match="larger than the model size"):
        BSDSyntheticDataset(
            image_size=8, root=mini_root, kernel={"type": "motion", "size": 9, "intensity": 0.5}
        )
    with pytest.raises(ConfigError, match=r"dataset\.kernel_per"):
        BSDSyntheticDataset(image_size=16, root=mini_root, kernel_per="image")
    with pytest.raises(ConfigError, match=r"dataset\.blur_mode"):
        BSDSyntheticDataset(image_size=16, root=mini_root, blur_mode="valid")
    with pytest.raises(ConfigError, match=r"dataset\.kernel"):
        BSDSyntheticDataset(image_size=16, root=mini_root, kernel={"size": 9})


# ----------------------------------------------------------------------------- configs


def test_config_default_root() -> None:
    cfg = compose_cfg(["dataset=bsd", "paths.data_dir=/data"])
    assert cfg.dataset.root == "/data/BSD"
    assert cfg.dataset.exposure == "1ms8ms" and cfg.dataset.split == "test"


def test_config_instantiates(mini_root: Path, kernel_api: Any) -> None:
    cfg = compose_cfg(["dataset=bsd", f"dataset.root={mini_root}", "dataset.sequences=[1]"])
    ds = instantiate(cfg.dataset, image_size=(24, 32))
    assert isinstance(ds, BSDDataset) and len(ds) == 5
    assert ds[0]["measurement"].shape == (3, 24, 32)

    cfg = compose_cfg(
        [
            "dataset=bsd_synthetic",
            f"dataset.root={mini_root}",
            "dataset.kernel.size=5",
            "dataset.kernel_per=frame",
            "dataset.limit=2",
        ]
    )
    ds = instantiate_config("dataset", cfg.dataset, image_size=(16, 16))
    assert isinstance(ds, BSDSyntheticDataset) and len(ds) == 2
    assert ds[1]["kernel"].shape == (5, 5)

    cfg = compose_cfg(["dataset=bsd", f"dataset.root={mini_root}", "dataset.exposure=2ms16ms"])
    with pytest.raises(ConfigError, match="BSD_2ms16ms"):
        instantiate_config("dataset", cfg.dataset, image_size=16)
