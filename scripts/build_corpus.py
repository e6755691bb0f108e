"""Build the photo corpus the bundled prior is trained, validated and tested on.

    python scripts/build_corpus.py                       # -> $DDRM_EXP_DATA/corpus (data/corpus)
    python scripts/build_corpus.py --out /tmp/corpus --debs /tmp/debs   # reuse downloaded .debs

Every picture is a natural photograph shipped inside a package this machine can reach without
a download at run time: scikit-image's data, Debian's desktop wallpaper packages and the OpenCV
documentation's sample data (fetched with ``apt-get download`` and unpacked with ``dpkg -x``, so
nothing is installed), scikit-learn's and matplotlib's sample images (read from the wheels).

Which files are photographs is a *reviewed list* (``PICTURES`` below): each package's images were
looked at on contact sheets and the renders, gradients, logos, paintings, screenshots, charts and
calibration patterns were left out. One file per picture: packages that ship a picture at several
resolutions or as light/dark variants contribute the largest file of that picture once.

Splits are by picture and by source:

* ``train`` -- most pictures of the training sources (skimage's ``train``/``train_gray`` photos,
  ``mate-backgrounds``, ``plasma-workspace-wallpapers``, ``lomiri-wallpapers-16.04``);
* ``val`` -- two pictures from each Debian training source, never trained on: snapshots and
  defaults are chosen here;
* ``test`` -- two further pictures from each Debian training source plus whole sources that
  nothing is trained or tuned on (``opencv-doc``, ``lomiri-wallpapers-20.04``, scikit-learn,
  matplotlib): numbers are reported here.

scikit-image's four held-out photos (astronaut, chelsea, coffee, rocket) stay out of the corpus:
they are the project's sample dataset, evaluated on their own.

Output (never committed; ``data/`` is git-ignored):

* ``pictures/<source>/<picture>.png`` -- each picture once, downscaled so its short side is at
  most ``--max-side`` (training crops are cut from these);
* ``eval/<split>/<source>__<picture>__{full,detail}.png`` -- the 64x64 evaluation views of the
  ``val`` and ``test`` pictures: the centred square of the whole short side, and the centred
  square of half of it (so 2 images per picture; statistics group them by picture);
* ``manifest.json`` -- per picture: source, package and version, file inside it, licence (from
  the package's DEP-5 copyright file, or the wheel's own notice), split, sizes, sha256.

The build refuses near-duplicates across splits (any two pictures whose 32x32 grey thumbnails
correlate above 0.9), so no validation or test picture reaches training at another resolution.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = None  # the wallpapers go up to 5120x2880; they are trusted package data

EVAL_SIZE = 64
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Picture:
    source: str  # a Debian package, or "wheel:<distribution>"
    name: str
    pattern: str  # glob (inside the unpacked package / the installed distribution) of its files
    split: str


def _deb(
    package: str,
    folder: str,
    train: list[str],
    val: list[str],
    test: list[str],
    pattern: str = "{folder}/{name}.*",
) -> list[Picture]:
    out = []
    for split, names in (("train", train), ("val", val), ("test", test)):
        for name in names:
            out.append(Picture(package, name, pattern.format(folder=folder, name=name), split))
    return out


# The reviewed list. Left out after looking, per package: gnome-backgrounds (all renders),
# ukui-wallpapers (all renders), sway-backgrounds (logos), lomiri-wallpapers (one render),
# lomiri-wallpapers-16.04 analogpattern (abstract blur) and umang (render), -20.04 Fossa,
# Infinite-Sea, Painting-Colors (renders/paintings), mate abstract/desktop (renders; Elephants is
# a painting), plasma Altai, Autumn, Canopee, Cascade, Cluster, Elarun, Flow, FlyingKonqui,
# Honeywave, IceCold, Kay, Kokkini, MilkyWay, Opal, PastelHills, Patak, SafeLanding, Shell, Volna
# (renders/illustrations), opencv-doc's synthetic images, logos, charts, text, chessboard
# calibration shots, greyscale shots, and one of each stereo/modified pair (aloeR, leuvenB,
# rubberwhale2, ela_modified), the motion-blurred licence plate and the Starry Night painting.
PICTURES: list[Picture] = [
    *_deb(
        "mate-backgrounds",
        "usr/share/backgrounds/mate/nature",
        train=[
            "Aqua",
            "Blinds",
            "Dune",
            "FreshFlower",
            "GreenMeadow",
            "RainDrops",
            "TwoWings",
            "YellowFlower",
        ],
        val=["LadyBird", "Storm"],
        test=["Garden", "Wood"],
    ),
    *_deb(
        "plasma-workspace-wallpapers",
        "usr/share/wallpapers",
        train=[
            "BytheWater",
            "ColdRipple",
            "DarkestHour",
            "Grey",
            "Kite",
            "OneStandsOut",
            "summer_1am",
        ],
        val=["ColorfulCups", "Path"],
        test=["EveningGlow", "FallenLeaf"],
        pattern="{folder}/{name}/contents/images/*",
    ),
    *_deb(
        "lomiri-wallpapers-16.04",
        "usr/share/backgrounds",
        train=[
            "Bridge_by_Sander_Klootwijk",
            "Dragonfly_by_Bolly",
            "Picture_0B_by_freespace",
            "Picture_1A_by_freespace",
            "aitzgorri_by_Aitzol_Berasategi",
            "free_by_Peter_Nerlich",
            "greentock_by_Peter_Nerlich",
            "life_by_Aitzol_Berasategi",
            "sunset_by_Aitzol_Berasategi",
        ],
        val=["friends_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt"],
        test=["picosdeeuropa_by_Aitzol_Berasategi", "Wine_by_Jakkub_Mede"],
    ),
    # Test-only sources: nothing is trained or tuned on them.
    *_deb("lomiri-wallpapers-20.04", "usr/share/backgrounds", [], [], ["Kleiber_by_Lukas_Baubkus"]),
    *_deb(
        "opencv-doc",
        "usr/share/doc/opencv-doc/examples/data",
        train=[],
        val=[],
        test=[
            "aero1",
            "aero3",
            "aloeL",
            "apple",
            "baboon",
            "board",
            "building",
            "butterfly",
            "chicky_512",
            "ela_original",
            "fruits",
            "home",
            "leuvenA",
            "messi5",
            "orange",
            "rubberwhale1",
            "squirrel_cls",
        ],
    ),
    Picture("wheel:scikit-learn", "china", "sklearn/datasets/images/china.jpg", "test"),
    Picture("wheel:scikit-learn", "flower", "sklearn/datasets/images/flower.jpg", "test"),
    Picture(
        "wheel:matplotlib",
        "grace_hopper",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "test",
    ),
    # scikit-image's training photos (the held-out four are never in the corpus).
    *[
        Picture("wheel:scikit-image", n, f"skimage/data/{n}.*", "train")
        for n in (
            "hubble_deep_field",
            "ihc",
            "motorcycle_left",
            "motorcycle_right",
            "retina",
            "camera",
            "coins",
            "moon",
            "brick",
            "grass",
            "gravel",
        )
    ],
]

WHEEL_LICENCES = {
    "wheel:scikit-image": "see skimage/data/README.txt (public domain / CC0 / CC-BY per file)",
    "wheel:scikit-learn": "CC-BY-2.0 (sklearn/datasets/images/README.txt)",
    "wheel:matplotlib": "public domain (US Navy photograph; matplotlib sample data)",
}


def debian_packages() -> list[str]:
    return sorted({p.source for p in PICTURES if not p.source.startswith("wheel:")})


def fetch_debs(packages: list[str], debs: Path) -> dict[str, Path]:
    """``<package>_<version>_all.deb`` per package in ``debs``, downloading the missing ones."""
    debs.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for package in packages:
        have = sorted(debs.glob(f"{package}_*.deb"))
        if not have:
            proc = subprocess.run(
                ["apt-get", "download", package], cwd=debs, capture_output=True, text=True
            )
            have = sorted(debs.glob(f"{package}_*.deb"))
            if proc.returncode != 0 or not have:
                why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
                sys.exit(
                    f"build_corpus: error: could not download the Debian package {package!r} "
                    f"({why}). Run 'apt-get update' first, or put the .deb in --debs."
                )
        found[package] = have[-1]
    return found


def unpack(deb: Path, into: Path) -> Path:
    target = into / deb.name.split("_")[0]
    if not target.exists():
        into.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(deb), str(target)], check=True)
    return target


def wheel_root(source: str) -> Path:
    """site-packages of the installed distribution (scikit-learn is downloaded as a wheel)."""
    module = {"wheel:scikit-image": "skimage", "wheel:matplotlib": "matplotlib"}.get(source)
    if module is not None:
        return Path(__import__(module).__file__).parent.parent
    return Path()  # scikit-learn: unpacked from its wheel by unpack_wheel


def unpack_wheel(distribution: str, into: Path) -> Path:
    """Unpack a wheel's files (without installing it): scikit-learn is not a dependency."""
    target = into / f"wheel-{distribution}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                tmp,
                distribution,
            ],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        shutil.unpack_archive(str(wheel), str(target), format="zip")
    return target


def deb_licence(root: Path, package: str, relpath: str) -> str:
    """The DEP-5 licence of a file: the last ``Files:`` stanza whose glob matches its path end."""
    copyright_file = root / "usr/share/doc" / package / "copyright"
    if not copyright_file.is_file():
        return "unknown (no copyright file)"
    licence = "unknown"
    for stanza in copyright_file.read_text(errors="replace").split("\n\n"):
        files = re.search(r"^Files:(.*(?:\n[ \t].*)*)", stanza, re.MULTILINE)
        lic = re.search(r"^License:\s*(\S.*)$", stanza, re.MULTILINE)
        if not files or not lic:
            continue
        for pattern in files.group(1).split():
            # Copyright paths are the upstream tree's, not the installed ones: match the path's
            # end, or the file name alone where the pattern names one file.
            depth = pattern.count("/") + 1
            tail = "/".join(relpath.split("/")[-depth:])
            leaf = pattern.rsplit("/", 1)[-1]
            named = not any(c in leaf for c in "*?[") and leaf == relpath.rsplit("/", 1)[-1]
            if pattern == "*" or fnmatch.fnmatch(tail, pattern) or named:
                licence = lic.group(1).strip()
    return licence


def largest(files: list[Path]) -> Path:
    def pixels(path: Path) -> int:
        with Image.open(path) as img:
            return img.width * img.height

    return max(files, key=lambda f: (pixels(f), f.name))


def read_rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def downscale(img: Image.Image, max_side: int) -> Image.Image:
    short = min(img.size)
    if short <= max_side:
        return img
    scale = max_side / short
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def eval_views(img: Image.Image) -> dict[str, Image.Image]:
    """The centred square of the whole short side and of half of it, at EVAL_SIZE."""
    views = {}
    for name, frac in (("full", 1.0), ("detail", 0.5)):
        side = max(EVAL_SIZE, int(min(img.size) * frac))
        left, top = (img.width - side) // 2, (img.height - side) // 2
        crop = img.crop((left, top, left + side, top + side))
        views[name] = crop.resize((EVAL_SIZE, EVAL_SIZE), Image.Resampling.LANCZOS)
    return views


def thumbnail(img: Image.Image) -> np.ndarray:
    """A 32x32 grey thumbnail of the centred square, standardised: near-duplicates correlate."""
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    small = img.crop((left, top, left + side, top + side)).convert("L").resize((32, 32))
    arr = np.asarray(small, dtype=np.float64).ravel()
    return (arr - arr.mean()) / (arr.std() + 1e-9)


def cross_split_duplicates(
    thumbs: dict[str, np.ndarray], splits: dict[str, str], threshold: float = 0.9
) -> list[tuple[str, str, float]]:
    """Pairs of pictures in different splits whose thumbnails correlate above ``threshold``."""
    keys = sorted(thumbs)
    out = []
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            if splits[a] == splits[b]:
                continue
            corr = float(np.dot(thumbs[a], thumbs[b]) / thumbs[a].size)
            if corr > threshold:
                out.append((a, b, corr))
    return out


def is_gray(img: Image.Image) -> bool:
    arr = np.asarray(img, dtype=np.int16)
    return int(np.abs(arr - arr.mean(axis=2, keepdims=True)).max()) <= 3


def build(out: Path, debs: Path, max_side: int) -> dict:
    unpacked = debs / "unpacked"
    deb_files = fetch_debs(debian_packages(), debs)
    roots: dict[str, Path] = {pkg: unpack(deb, unpacked) for pkg, deb in deb_files.items()}
    roots["wheel:scikit-learn"] = unpack_wheel("scikit-learn", unpacked)
    for source in ("wheel:scikit-image", "wheel:matplotlib"):
        roots[source] = wheel_root(source)

    if out.exists():
        shutil.rmtree(out)
    entries, thumbs, splits = [], {}, {}
    for pic in PICTURES:
        root = roots[pic.source]
        files = [
            f
            for f in root.glob(pic.pattern)
            if f.suffix.lower() in (".jpg", ".png", ".jpeg", ".webp")
        ]
        if not files:
            sys.exit(f"build_corpus: error: no file matches {pic.pattern!r} in {pic.source}.")
        chosen = largest(files)
        relpath = chosen.relative_to(root).as_posix()
        img = read_rgb(chosen)
        key = f"{pic.source.removeprefix('wheel:')}__{pic.name}"
        stored = downscale(img, max_side)
        dest = out / "pictures" / pic.source.removeprefix("wheel:") / f"{pic.name}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        stored.save(dest)
        if pic.split != "train":
            for view, vimg in eval_views(img).items():
                vdest = out / "eval" / pic.split / f"{key}__{view}.png"
                vdest.parent.mkdir(parents=True, exist_ok=True)
                vimg.save(vdest)
        if pic.source.startswith("wheel:"):
            package, version = pic.source.removeprefix("wheel:"), _dist_version(pic.source, root)
            licence = WHEEL_LICENCES[pic.source]
        else:
            package = pic.source
            version = deb_files[pic.source].name.split("_")[1].replace("%3a", ":")
            licence = deb_licence(root, pic.source, relpath)
        entries.append(
            {
                "id": key,
                "picture": pic.name,
                "source": pic.source,
                "package": package,
                "version": version,
                "file": relpath,
                "licence": licence,
                "split": pic.split,
                "gray": is_gray(img),
                "original_size": list(img.size),
                "stored_size": list(stored.size),
                "stored": dest.relative_to(out).as_posix(),
                "sha256": hashlib.sha256(chosen.read_bytes()).hexdigest(),
            }
        )
        thumbs[key], splits[key] = thumbnail(img), pic.split

    dups = cross_split_duplicates(thumbs, splits)
    if dups:
        listed = "; ".join(f"{a} ~ {b} ({c:.2f})" for a, b, c in dups)
        sys.exit(f"build_corpus: error: near-duplicate pictures across splits: {listed}.")
    manifest = {
        "eval_size": EVAL_SIZE,
        "max_side": max_side,
        "counts": {s: sum(e["split"] == s for e in entries) for s in SPLITS},
        "test_only_sources": sorted(
            {e["source"] for e in entries} - {e["source"] for e in entries if e["split"] != "test"}
        ),
        "pictures": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _dist_version(source: str, root: Path) -> str:
    from importlib import metadata

    name = source.removeprefix("wheel:")
    unpacked = sorted(root.glob(f"{name.replace('-', '_')}-*.dist-info"))
    if unpacked:  # a wheel unpacked by unpack_wheel: its own version, not an installed one
        return unpacked[-1].name.removesuffix(".dist-info").split("-")[1]
    return metadata.version(name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(os.environ.get("DDRM_EXP_DATA", "data")) / "corpus"
    parser.add_argument("--out", type=Path, default=default_out, help="corpus directory")
    parser.add_argument(
        "--debs",
        type=Path,
        default=Path(tempfile.gettempdir()) / "ddrm_exp_debs",
        help="where .deb files are downloaded and unpacked (kept for reruns)",
    )
    parser.add_argument(
        "--max-side", type=int, default=768, help="short side of the stored training pictures"
    )
    args = parser.parse_args(argv)
    manifest = build(args.out, args.debs, args.max_side)
    counts = manifest["counts"]
    print(
        f"corpus in {args.out}: {sum(counts.values())} pictures "
        f"(train {counts['train']}, val {counts['val']}, test {counts['test']}); "
        f"test-only sources: {', '.join(manifest['test_only_sources'])}"
    )


if __name__ == "__main__":
    main()
