"""Weights registry, download, cache and safe loading (local HTTP server only, no internet)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers import QuietHandler, local_server
from omegaconf import DictConfig, OmegaConf

from ddrm_exp.errors import ConfigError
from ddrm_exp.models.checkpoints import (
    WeightsSpec,
    cache_path,
    download_file,
    load_state_dict,
    resolve_checkpoint,
)
from ddrm_exp.paths import CONF_DIR

ROOT = CONF_DIR.parent
SCRIPT = ROOT / "scripts" / "download_weights.py"


def _payload() -> bytes:
    buf = io.BytesIO()
    torch.save({"conv.weight": torch.arange(12.0).reshape(3, 4), "conv.bias": torch.ones(3)}, buf)
    return buf.getvalue()


GOOD = _payload()
GOOD_MD5 = hashlib.md5(GOOD).hexdigest()
GOOD_SHA256 = hashlib.sha256(GOOD).hexdigest()


@dataclass
class Server:
    base: str
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@pytest.fixture()
def server() -> Iterator[Server]:
    record: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            record.append(self.path)
            if self.path.startswith("/good"):
                self.send_body(GOOD, "application/octet-stream")
            elif self.path.startswith("/truncated"):
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(GOOD) + 4096))
                self.end_headers()
                self.wfile.write(GOOD[: len(GOOD) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif self.path.startswith("/html"):
                body = b"<!DOCTYPE html><html><body>Link expired</body></html>"
                self.send_body(body, "text/html")
            else:
                self.send_error(404, "Not Found")

    with local_server(Handler) as url:
        yield Server(url, record)


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DDRM_EXP_OFFLINE", raising=False)
    # never let a stray proxy setting route the local test server elsewhere
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def _assert_failed_cleanly(exc: ConfigError, url: str, spec: WeightsSpec, cache: Path) -> None:
    message = str(exc)
    dest = cache_path(cache, spec)
    assert "demo" in message
    assert url in message
    assert spec.file in message
    assert str(dest) in message
    assert "scripts/download_weights.py demo" in message
    assert not dest.exists()
    assert not [p for p in _files(cache) if ".part" in p.name]
    assert _files(cache) == []


# --------------------------------------------------------------------------------------------
# resolve_checkpoint / download_file


def test_good_download_lands_in_cache_once(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    spec = WeightsSpec(
        file="demo_model/model-1.ckpt",
        url=server.url("/good?dl=1"),
        md5=GOOD_MD5,
        sha256=GOOD_SHA256,
        size=len(GOOD),
    )
    path = resolve_checkpoint("demo", spec, None, cache)
    assert path == cache / "demo_model" / "model-1.ckpt"
    assert path.read_bytes() == GOOD
    assert _files(cache) == [path]
    assert len(server.requests) == 1

    again = resolve_checkpoint("demo", spec, None, cache, download=False)
    assert again == path
    assert len(server.requests) == 1
    sd = load_state_dict(path)
    assert torch.equal(sd["conv.weight"], torch.arange(12.0).reshape(3, 4))


def test_mapping_and_dictconfig_specs(server: Server, tmp_path: Path) -> None:
    weights = {"file": "m.ckpt", "url": server.url("/good"), "md5": GOOD_MD5.upper()}
    cfg = OmegaConf.create({"weights": {**weights, "sha256": None, "size": None}})
    assert WeightsSpec.from_config(cfg.weights) == WeightsSpec.from_config(weights)
    assert WeightsSpec.from_config(weights).md5 == GOOD_MD5
    path = resolve_checkpoint("demo", cfg.weights, None, str(tmp_path))
    assert path == cache_path(tmp_path, weights) == tmp_path / "m.ckpt"


def test_unverified_download_is_accepted_with_warning(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = WeightsSpec(file="plain.ckpt", url=server.url("/good"))
    with caplog.at_level("WARNING"):
        path = resolve_checkpoint("demo", spec, None, tmp_path)
    assert path.read_bytes() == GOOD
    assert "could not be verified" in caplog.text


def test_wrong_checksum_leaves_nothing(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    url = server.url("/good")
    spec = WeightsSpec(file="demo_model/model-1.ckpt", url=url, md5="0" * 32)
    with pytest.raises(ConfigError) as info:
        resolve_checkpoint("demo", spec, None, cache)
    _assert_failed_cleanly(info.value, url, spec, cache)
    assert "md5" in str(info.value)
    assert len(server.requests) == 1


def test_wrong_sha256_leaves_nothing(server: Server, tmp_path: Path) -> None:
    url = server.url("/good")
    spec = WeightsSpec(file="x.ckpt", url=url, md5=GOOD_MD5, sha256="f" * 64)
    with pytest.raises(ConfigError) as info:
        resolve_checkpoint("demo", spec, None, tmp_path)
    _assert_failed_cleanly(info.value, url, spec, tmp_path)


def test_wrong_size_leaves_nothing(server: Server, tmp_path: Path) -> None:
    url = server.url("/good")
    spec = WeightsSpec(file="x.ckpt", url=url, size=len(GOOD) + 1)
    with pytest.raises(ConfigError) as info:
        resolve_checkpoint("demo", spec, None, tmp_path)
    _assert_failed_cleanly(info.value, url, spec, tmp_path)


def test_truncated_body_leaves_nothing(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    url = server.url("/truncated")
    spec = WeightsSpec(file="demo_model/model-1.ckpt", url=url)
    with pytest.raises(ConfigError) as info:
        resolve_checkpoint("demo", spec, None, cache)
    _assert_failed_cleanly(info.value, url, spec, cache)
    assert "cut off" in str(info.value)


def test_http_404_leaves_nothing(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    url = server.url("/missing.ckpt")
    spec = WeightsSpec(file="demo_model/model-1.ckpt", url=url, md5=GOOD_MD5)
    with pytest.raises(ConfigError) as info:
        resolve_checkpoint("demo", spec, None, cache)
    _assert_failed_cleanly(info.value, url, spec, cache)
    assert "404" in str(info.value)
    assert not cache.exists()  # the directories made for the download are gone too


def test_html_page_is_not_accepted(server: Server, tmp_path: Path) -> None:
    url = server.url("/html")
    spec = WeightsSpec(file="x.ckpt", url=url)
    with pytest.raises(ConfigError, match="web page") as info:
        resolve_checkpoint("demo", spec, None, tmp_path)
    _assert_failed_cleanly(info.value, url, spec, tmp_path)


def test_unreachable_server(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.ckpt"
    spec = WeightsSpec(file="x.ckpt", url=url)
    with pytest.raises(ConfigError, match="could not be reached") as info:
        resolve_checkpoint("demo", spec, None, tmp_path)
    _assert_failed_cleanly(info.value, url, spec, tmp_path)


def test_download_file_replaces_atomically(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.ckpt"
    dest.write_bytes(b"old")
    with pytest.raises(ConfigError):
        download_file(server.url("/nope"), dest)
    assert dest.read_bytes() == b"old"
    assert download_file(server.url("/good"), dest, md5=GOOD_MD5, timeout=5) == dest
    assert dest.read_bytes() == GOOD
    assert _files(tmp_path) == [dest]


def test_download_false_makes_no_request(server: Server, tmp_path: Path) -> None:
    spec = WeightsSpec(file="demo_model/model-1.ckpt", url=server.url("/good"), md5=GOOD_MD5)
    with pytest.raises(ConfigError, match="model.download=false") as info:
        resolve_checkpoint("demo", spec, None, tmp_path, download=False)
    assert str(cache_path(tmp_path, spec)) in str(info.value)
    assert spec.url is not None and spec.url in str(info.value)
    assert server.requests == []
    assert _files(tmp_path) == []


def test_offline_env_makes_no_request(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DDRM_EXP_OFFLINE", "1")
    spec = WeightsSpec(file="demo_model/model-1.ckpt", url=server.url("/good"))
    with pytest.raises(ConfigError, match="DDRM_EXP_OFFLINE") as info:
        resolve_checkpoint("demo", spec, None, tmp_path, download=True)
    assert "scripts/download_weights.py demo" in str(info.value)
    assert str(cache_path(tmp_path, spec)) in str(info.value)
    assert server.requests == []


def test_corrupt_cached_file_is_reported(server: Server, tmp_path: Path) -> None:
    spec = WeightsSpec(file="m.ckpt", url=server.url("/good"), md5=GOOD_MD5)
    dest = cache_path(tmp_path, spec)
    dest.write_bytes(GOOD[:-10])
    with pytest.raises(ConfigError, match="Delete it") as info:
        resolve_checkpoint("demo", spec, None, tmp_path)
    assert str(dest) in str(info.value)
    assert server.requests == []
    assert dest.read_bytes() == GOOD[:-10]  # left for the user to inspect


def test_explicit_checkpoint_wins(server: Server, tmp_path: Path) -> None:
    mine = tmp_path / "mine.pt"
    mine.write_bytes(GOOD)
    spec = WeightsSpec(file="m.ckpt", url=server.url("/good"), md5="0" * 32)
    assert resolve_checkpoint("demo", spec, mine, tmp_path / "cache") == mine
    assert resolve_checkpoint("demo", None, str(mine), tmp_path / "cache") == mine
    assert server.requests == []


def test_explicit_checkpoint_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "weights.ckpt"
    spec = WeightsSpec(file="m.ckpt", url="http://127.0.0.1:9/m.ckpt")
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        resolve_checkpoint("demo", spec, missing, tmp_path)


def test_no_weights_and_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.checkpoint"):
        resolve_checkpoint("demo", None, None, tmp_path)


@pytest.mark.parametrize(
    "weights",
    [
        {"file": "../escape.ckpt", "url": None},
        {"file": "/abs/path.ckpt", "url": None},
        {"file": "", "url": None},
        {"file": "m.ckpt", "url": "ftp://host/m.ckpt"},
        {"file": "m.ckpt", "url": None, "md5": "xyz"},
        {"file": "m.ckpt", "url": None, "sha256": "ab" * 16},
        {"file": "m.ckpt", "url": None, "size": -1},
        {"file": "m.ckpt", "url": None, "sha1": "ab"},
        {"url": "http://x/m.ckpt"},
    ],
)
def test_bad_weights_block(weights: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        WeightsSpec.from_config(weights)


# --------------------------------------------------------------------------------------------
# load_state_dict


class _Payload:
    """Unpickling this runs a shell command: the kind of file load_state_dict must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"echo pwned > {self.marker}",))


def test_code_payload_is_refused_torch_save(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "x": _Payload(marker)}, path)
    with pytest.raises(ConfigError, match="refused for safety") as info:
        load_state_dict(path)
    assert "not a plain weights file" in str(info.value)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_code_payload_is_refused_raw_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ConfigError, match="refused for safety"):
        load_state_dict(path)
    assert not marker.exists()


def test_container_unwrapping(tmp_path: Path) -> None:
    sd = {"a.weight": torch.randn(2, 2), "b": torch.zeros(1)}
    cases = {
        "state_dict": {"state_dict": sd},
        "model": {"model": sd},
        "ema_and_more": {"ema": sd, "optimizer": {"state": {}}, "step": 7},
        "list": [sd, {"state": {}, "param_groups": []}, 3, 100],
        "tuple": (sd,),
        "dataparallel": {f"module.{k}": v for k, v in sd.items()},
        "nested": {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1},
    }
    for name, obj in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(obj, path)
        loaded = load_state_dict(path)
        assert loaded.keys() == sd.keys(), name
        assert all(torch.equal(loaded[k], sd[k]) for k in sd), name


def test_partial_module_prefix_kept(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"module.a": torch.ones(1), "b": torch.ones(1)}, path)
    assert set(load_state_dict(path)) == {"module.a", "b"}


def test_legacy_torch_format(tmp_path: Path) -> None:
    sd = {"w": torch.arange(4.0)}
    path = tmp_path / "legacy.ckpt"
    torch.save([sd, {}], path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict(path)["w"], sd["w"])


def test_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = {"x.weight": torch.randn(3, 3), "x.bias": torch.randn(3)}
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    loaded = load_state_dict(path)
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_corrupt_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ConfigError, match="corrupt"):
        load_state_dict(path)


@pytest.mark.parametrize(
    ("obj", "pattern"),
    [
        ({"a": torch.ones(1), "n": 3}, "not tensors"),
        ({"a": {"b": 1}}, "not tensors"),
        ([1, 2], "does not hold a state dict"),
        ({}, "does not hold a state dict"),
        (torch.ones(3), "does not hold a state dict"),
    ],
)
def test_non_tensor_payload(tmp_path: Path, obj: object, pattern: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(obj, path)
    with pytest.raises(ConfigError, match=pattern):
        load_state_dict(path)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html>login</html>", "web page"),
        (GOOD[:200], "corrupt"),
        (b"\x80\x02garbage", "corrupt|refused"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, pattern: str) -> None:
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=pattern):
        load_state_dict(path)


# --------------------------------------------------------------------------------------------
# registry and the download script


def _model_configs() -> list[Path]:
    return sorted((CONF_DIR / "model").glob("*.yaml"))


def test_registry_entries_are_well_formed() -> None:
    with_weights = 0
    for path in _model_configs():
        cfg = OmegaConf.load(path)
        assert isinstance(cfg, DictConfig)
        weights = cfg.get("weights")
        if weights is None:
            continue
        with_weights += 1
        raw = OmegaConf.to_container(weights, resolve=False)
        assert isinstance(raw, dict), path
        assert isinstance(raw.get("file"), str) and raw["file"], path
        assert isinstance(raw.get("url"), str) and raw["url"].startswith("https://"), path
        for algo, digits in (("md5", 32), ("sha256", 64)):
            value = raw.get(algo)
            if value is not None:
                assert isinstance(value, str), (path, algo)
                assert re.fullmatch(f"[0-9a-f]{{{digits}}}", value), (path, algo)
        spec = WeightsSpec.from_config(raw)
        assert cache_path("/c", spec) == Path("/c", *spec.file.split("/"))
        assert cfg.get("name") == path.stem, path
        assert "checkpoint" in cfg and "download" in cfg and "cache_dir" in cfg, path
    assert with_weights >= 6


def _script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def test_script_list_and_unknown_name(tmp_path: Path) -> None:
    listed = _script("--list", "--cache-dir", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert "lsun_bedroom" in listed.stdout
    assert "ema_diffusion_lsun_bedroom_model/model-2388000.ckpt" in listed.stdout
    assert "1921fa46b66a3665e450e42f36c2720f" in listed.stdout
    assert "https://heibox.uni-heidelberg.de/f/b95206528f384185889b/?dl=1" in listed.stdout

    unknown = _script("no_such_model", "--cache-dir", str(tmp_path))
    assert unknown.returncode == 2
    assert "no_such_model" in unknown.stderr
    assert "lsun_bedroom" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_script_offline_error_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # in-process (importing the script) to spare a second interpreter start
    spec = importlib.util.spec_from_file_location("download_weights", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("DDRM_EXP_OFFLINE", "1")
    monkeypatch.setenv("DDRM_EXP_CACHE", str(tmp_path))
    assert module.main(["cifar10"]) == 1
    err = capsys.readouterr().err
    assert "DDRM_EXP_OFFLINE" in err
    assert str(tmp_path / "ema_diffusion_cifar10_model" / "model-790000.ckpt") in err
    assert "Traceback" not in err
    assert _files(tmp_path) == []
    assert module.main(["--list"]) == 0
    assert "not downloaded" in capsys.readouterr().out
