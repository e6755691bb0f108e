"""Inpainting masks from files (``degradation.mask_path``) and the official lorem mask.

The official ``lorem3.npy`` is never in this repository and these tests use no network: the
download path runs against a local HTTP server with the pinned URL, hash and size monkeypatched
to a generated file (no other file can match the real pinned sha256).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import QuietHandler, compose_cfg, config_error, local_server
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from ddrm_exp import load_operator
from ddrm_exp.degradations import fit_mask, read_mask_file
from ddrm_exp.degradations import official_masks as om
from ddrm_exp.errors import ConfigError
from ddrm_exp.tracking.resume import config_hash

INPAINTING = ["inpaint_random", "inpaint_box", "inpaint_lorem"]


def _mask(h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    """A 0/1 uint8 mask with about a third missing, 0 = missing."""
    rng = np.random.default_rng(seed)
    return (rng.random((h, w)) > 0.33).astype(np.uint8)


def _npy(tmp_path: Path, arr: np.ndarray, name: str = "mask.npy") -> Path:
    path = tmp_path / name
    np.save(path, arr)
    return path


# ---- mask_path ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", INPAINTING)
def test_npy_mask_replaces_the_drawn_one(tmp_path: Path, name: str) -> None:
    arr = _mask()
    op = load_operator(name, 16, mask_path=str(_npy(tmp_path, arr)))
    assert torch.equal(op.mask, torch.from_numpy(arr != 0))
    x = torch.randn(2, op.n)
    kept = x.view(2, 3, -1)[:, :, torch.from_numpy(arr.reshape(-1) != 0)].reshape(2, -1)
    torch.testing.assert_close(op.H(x), kept, rtol=0, atol=0)


def test_bool_npy_and_channel_first_npy(tmp_path: Path) -> None:
    arr = _mask() != 0
    assert torch.equal(read_mask_file(_npy(tmp_path, arr)), torch.from_numpy(arr))
    stacked = np.stack([arr, arr, arr]).astype(np.uint8) * 255
    assert torch.equal(read_mask_file(_npy(tmp_path, stacked, "c.npy")), torch.from_numpy(arr))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "1", "P"])
def test_image_masks(tmp_path: Path, mode: str) -> None:
    arr = _mask()
    img = Image.fromarray(arr * 255, mode="L").convert(mode)
    path = tmp_path / "mask.png"
    img.save(path)
    op = load_operator("inpaint_random", 16, mask_path=str(path))
    assert torch.equal(op.mask, torch.from_numpy(arr != 0))


def test_scaled_mask_is_resampled_by_area(tmp_path: Path) -> None:
    small = _mask(8, 8)
    big = np.kron(small, np.ones((4, 4), dtype=np.uint8))  # 32x32, every pixel a 4x4 block
    op = load_operator("inpaint_box", 8, mask_path=str(_npy(tmp_path, big)))
    assert torch.equal(op.mask, torch.from_numpy(small != 0))
    # a pixel is missing when more than half of its area is
    block = np.ones((2, 2), dtype=np.uint8)
    block[0, :] = 0  # half missing -> kept
    assert bool(fit_mask(torch.from_numpy(block != 0), 1, 1)[0, 0])
    block[1, 0] = 0  # three quarters missing -> missing
    assert not bool(fit_mask(torch.from_numpy(block != 0), 1, 1)[0, 0])


def test_other_aspect_ratio_is_refused(tmp_path: Path) -> None:
    path = _npy(tmp_path, _mask(16, 24))
    with pytest.raises(ConfigError, match=r"16x24 .* 16x16, another aspect ratio"):
        load_operator("inpaint_random", 16, mask_path=str(path))


@pytest.mark.parametrize(
    ("arr", "pattern"),
    [
        (np.array([[0.0, 0.5], [1.0, 1.0]]), "not a binary mask: it holds 3 distinct values"),
        (np.array([[0.0, np.nan], [1.0, 1.0]]), "not a binary mask"),
        (np.array([[-1, 1], [1, 1]]), "not a binary mask"),
        (np.array([[1, 2], [2, 2]]), "not a binary mask"),
        (np.zeros(4), r"shape \(4,\); a mask must be 2-D"),
        (np.stack([np.ones((5, 5)), np.zeros((5, 5)), np.ones((5, 5))]), "channels that differ"),
        (np.array([["a", "b"], ["c", "d"]]), "not numbers"),
    ],
)
def test_bad_mask_values(tmp_path: Path, arr: np.ndarray, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        read_mask_file(_npy(tmp_path, arr))


def test_all_missing_mask_is_refused(tmp_path: Path) -> None:
    path = _npy(tmp_path, np.zeros((16, 16), dtype=np.uint8))
    with pytest.raises(ConfigError, match="keeps none"):
        load_operator("inpaint_random", 16, mask_path=str(path))


def test_unreadable_mask_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_mask_file(tmp_path / "nope.npy")
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="could not be read as a .npy array"):
        read_mask_file(pickled)
    junk = tmp_path / "mask.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="neither a .npy array nor an image"):
        read_mask_file(junk)


# ---- the official lorem mask -------------------------------------------------------------------
def _fake_official(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[np.ndarray, bytes]:
    """A 256x256 mask whose hash and size stand in for the pinned ones."""
    arr = _mask(256, 256, seed=3)
    path = _npy(tmp_path, arr, "fake_lorem3.npy")
    data = path.read_bytes()
    monkeypatch.setattr(om, "LOREM_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(om, "LOREM_SIZE", len(data))
    return arr, data


def _cached(cache: Path) -> Path:
    return cache / "ddrm_official" / "inp_masks" / "lorem3.npy"


def test_pinned_url_and_hash() -> None:
    assert om.LOREM_URL == (
        "https://raw.githubusercontent.com/bahjat-kawar/ddrm/"
        "32b6b3ccfda532ba01c9cc5b6e7456c3a06a6ca2/inp_masks/lorem3.npy"
    )
    assert len(om.LOREM_SHA256) == 64 and om.LOREM_SIZE == 65664


def test_official_offline_says_url_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DDRM_EXP_OFFLINE", "1")
    with pytest.raises(ConfigError) as info:
        load_operator("inpaint_lorem", 64, source="official", cache_dir=str(tmp_path))
    message = str(info.value)
    assert om.LOREM_URL in message and str(_cached(tmp_path)) in message
    assert om.LOREM_SHA256 in message and "DDRM_EXP_OFFLINE=1" in message
    assert "lorem_source=rendered" in message and "\n" not in message
    assert not any(tmp_path.iterdir())


def test_official_in_cache_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDRM_EXP_OFFLINE", "1")  # found in the cache: no download needed
    arr, data = _fake_official(monkeypatch, tmp_path)
    _cached(tmp_path).parent.mkdir(parents=True)
    _cached(tmp_path).write_bytes(data)
    op = load_operator("inpaint_lorem", 256, source="official", cache_dir=str(tmp_path))
    assert torch.equal(op.mask, torch.from_numpy(arr != 0)) and op.source == "official"
    small = load_operator("inpaint_lorem", 64, source="official", cache_dir=str(tmp_path))
    assert small.mask.shape == (64, 64)


def test_official_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDRM_EXP_OFFLINE", "1")
    _cached(tmp_path).parent.mkdir(parents=True)
    np.save(_cached(tmp_path), _mask(256, 256))  # a 256x256 mask, not the official one
    with pytest.raises(ConfigError) as info:
        load_operator("inpaint_lorem", 256, source="official", cache_dir=str(tmp_path))
    message = str(info.value)
    assert "is not the official lorem3.npy" in message and str(_cached(tmp_path)) in message
    assert "rm " in message and om.LOREM_URL in message


def test_official_via_mask_path_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = _npy(tmp_path, _mask(256, 256, seed=9), "other.npy")
    with pytest.raises(ConfigError, match="is not the official lorem3.npy"):
        load_operator("inpaint_lorem", 256, source="official", mask_path=str(other))
    arr, _ = _fake_official(monkeypatch, tmp_path)
    op = load_operator(
        "inpaint_lorem", 256, source="official", mask_path=str(tmp_path / "fake_lorem3.npy")
    )
    assert torch.equal(op.mask, torch.from_numpy(arr != 0))


def test_bad_source() -> None:
    with pytest.raises(ConfigError, match="degradation.source must be one of rendered, official"):
        load_operator("inpaint_lorem", 16, source="offical")


def test_rendered_is_the_default_and_unchanged() -> None:
    from ddrm_exp.degradations import lorem_mask

    op = load_operator("inpaint_lorem", 32)
    assert op.source == "rendered" and torch.equal(op.mask, lorem_mask(32, 32))


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, list[str], dict[str, bytes]]]:
    routes: dict[str, bytes] = {}
    seen: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            seen.append(self.path)
            body = routes.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_body(body)

    with local_server(Handler) as url:
        yield url, seen, routes


@pytest.fixture()
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DDRM_EXP_OFFLINE", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.usefixtures("online")
def test_download_good_then_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: tuple[str, list[str], dict]
) -> None:
    base, seen, routes = server
    arr, data = _fake_official(monkeypatch, tmp_path)
    routes["/lorem3.npy"] = data
    monkeypatch.setattr(om, "LOREM_URL", f"{base}/lorem3.npy")
    cache = tmp_path / "cache"
    op = load_operator("inpaint_lorem", 256, source="official", cache_dir=str(cache))
    assert torch.equal(op.mask, torch.from_numpy(arr != 0))
    assert _cached(cache).read_bytes() == data and seen == ["/lorem3.npy"]
    load_operator("inpaint_lorem", 256, source="official", cache_dir=str(cache))
    assert seen == ["/lorem3.npy"]  # the second run reads the cache


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize("route", ["wrong", "missing"])
def test_download_failures_leave_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: tuple[str, list[str], dict],
    route: str,
) -> None:
    base, _, routes = server
    _, data = _fake_official(monkeypatch, tmp_path)
    routes["/wrong"] = data[:-1] + bytes([data[-1] ^ 1])  # same size, other bytes
    url = f"{base}/{route}"
    monkeypatch.setattr(om, "LOREM_URL", url)
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as info:
        load_operator("inpaint_lorem", 256, source="official", cache_dir=str(cache))
    message = str(info.value)
    assert url in message and str(_cached(cache)) in message and "Nothing was saved" in message
    assert ("sha256" in message) if route == "wrong" else ("HTTP 404" in message)
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


# ---- configs, hashes, the CLI ------------------------------------------------------------------
def _without(cfg: DictConfig, *keys: str) -> DictConfig:
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    for key in keys:
        plain["degradation"].pop(key, None)
    plain.pop("lorem_source", None)
    return OmegaConf.create(plain)


@pytest.mark.parametrize(
    ("name", "new_keys"),
    [
        ("deblur_uniform", ["official_compat"]),
        ("deblur_gauss", ["official_compat"]),
        ("deblur_aniso", ["official_compat"]),
        ("inpaint_random", ["mask_path"]),
        ("inpaint_box", ["mask_path"]),
        ("inpaint_lorem", ["mask_path", "source", "cache_dir"]),
    ],
)
def test_new_keys_at_default_keep_the_config_hash(name: str, new_keys: list[str]) -> None:
    cfg = compose_cfg([f"degradation={name}"])
    assert config_hash(cfg) == config_hash(_without(cfg, *new_keys))
    changed = {
        "official_compat": "true",
        "mask_path": "m.npy",
        "source": "official",
        "cache_dir": None,
    }
    for key in new_keys:
        if changed[key] is not None:
            other = compose_cfg([f"degradation={name}", f"degradation.{key}={changed[key]}"])
            assert config_hash(other) != config_hash(cfg), key


def test_table1_uses_the_official_mask_only_for_lorem() -> None:
    lorem = compose_cfg(["experiment=table1", "degradation=inpaint_lorem"])
    assert lorem.degradation.source == "official"
    demo = compose_cfg(["experiment=table1", "degradation=inpaint_lorem", "lorem_source=rendered"])
    assert demo.degradation.source == "rendered"
    colorize = compose_cfg(["experiment=table1", "degradation=colorize"])
    assert "source" not in colorize.degradation
    assert compose_cfg(["degradation=inpaint_lorem"]).degradation.source == "rendered"


def test_official_offline_is_one_paragraph_before_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: how the CLI prints a ConfigError (one paragraph, exit 2) is test_cli's."""
    monkeypatch.setenv("DDRM_EXP_OFFLINE", "1")
    args = [
        "degradation=inpaint_lorem",
        "degradation.source=official",
        # a model whose weights are not there either: the mask must fail first
        "model=lsun_bedroom",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "logger=none",
    ]
    error = config_error(args, tmp_path / "run")
    assert "\n" not in error.strip()
    assert om.LOREM_URL in error and "lorem3.npy" in error
    assert "weights" not in error
    assert not (tmp_path / "run" / "results.jsonl").exists()
