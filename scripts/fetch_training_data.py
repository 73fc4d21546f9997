#!/usr/bin/env python3
"""Fetch and prepare clean training photographs from Debian wallpaper packages.

Why these: they are freely licensed (GPL-2+ / CC-BY-SA), versioned, reachable
from a plain Debian mirror, and several are real high-resolution photographs.
Why downscale: an integer box (area) reduction by >= 2x averages away JPEG
blocking and sensor noise, so the prepared images can serve as *clean* targets
for synthetic degradation.

Usage (as root or with a writable apt cache; the Debian mirror must be reachable):

    python3 scripts/fetch_training_data.py --out data/train
    python3 scripts/fetch_training_data.py --rebuild-list /tmp/candidates.txt

By default the hand-checked list ``scripts/training_images.txt`` decides which
files are used, and every file is verified against its recorded sha256. The
``--rebuild-list`` heuristic only proposes candidates: look at them before
replacing the list (renders and digital paintings pass it now and then).

Only the Python standard library, Pillow and numpy are used.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LIST = REPO / "scripts" / "training_images.txt"
PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds", "ukui-wallpapers")
SHORT_NAMES = {
    "plasma-workspace-wallpapers": "plasma",
    "mate-backgrounds": "mate",
    "ukui-wallpapers": "ukui",
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Prepared images: shorter side in [MIN_SIDE, MAX_SIDE) after an integer reduction.
MIN_SIDE = 512
MAX_SIDE = 768
SIZE_BUDGET_MB = 45.0

# Heuristic thresholds (see `photo_features`); chosen on the packages above so
# that every photograph passes (high recall); precision comes from looking.
MIN_SHORT_SIDE = 1024
MIN_LONG_SIDE = 1280
MAX_FLAT_BLOCKS = 0.50  # share of 16x16 blocks with std < 1 grey level
MAX_ZERO_LAPLACIAN = 0.60  # share of pixels with |Laplacian| < 0.5
MAX_NOISE = 3.0  # grey levels; more is painted-on grain, not a photo
MIN_GREY_LEVELS = 128  # distinct 8-bit luminance values (stripes, posters)


@dataclass(frozen=True)
class Entry:
    """One line of the image list."""

    package: str
    path: str
    sha256: str
    width: int
    height: int
    license: str
    use: str  # "train" or "sample"

    def line(self) -> str:
        return (
            f"{self.package}\t{self.path}\t{self.sha256}\t{self.width}x{self.height}"
            f"\t{self.license}\t{self.use}"
        )


@dataclass(frozen=True)
class Package:
    """A downloaded and extracted wallpaper package."""

    name: str
    version: str
    root: Path  # the extracted tree (``dpkg -x``)

    def copyright(self) -> Path:
        return self.root / "usr" / "share" / "doc" / self.name / "copyright"


# --------------------------------------------------------------------------- list file


def read_list(path: Path) -> tuple[dict[str, str], list[Entry]]:
    """Parse the list: ``# package NAME VERSION`` headers and tab-separated entries."""
    versions: dict[str, str] = {}
    entries: list[Entry] = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*package\s+(\S+)\s+(\S+)", line)
            if m:
                versions[m.group(1)] = m.group(2)
            continue
        cols = line.split("\t")
        if (
            len(cols) != 6
            or not re.fullmatch(r"\d+x\d+", cols[3])
            or cols[5] not in ("train", "sample")
        ):
            raise SystemExit(
                f"{path}:{n}: expected 6 tab-separated columns "
                "(package, path, sha256, WxH, license, train|sample)"
            )
        w, h = (int(v) for v in cols[3].split("x"))
        entries.append(Entry(cols[0], cols[1], cols[2], w, h, cols[4], cols[5]))
    return versions, entries


def write_list(
    path: Path, packages: Iterable[Package], entries: Iterable[Entry], note: str
) -> None:
    header = [
        "# Clean training photographs from Debian wallpaper packages (bookworm).",
        f"# {note}",
        "# Columns (tab-separated): package, path inside the package, sha256 of the",
        "# original file, width x height, license (from usr/share/doc/<pkg>/copyright),",
        "# use (train = goes to --out, sample = held out to --samples).",
    ]
    header += [f"# package {p.name} {p.version}" for p in packages]
    body = [e.line() for e in entries]
    path.write_text("\n".join([*header, *body]) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- packages


def fetch_package(name: str, version: str | None, workdir: Path) -> Package:
    """``apt-get download`` (pinned version first) then ``dpkg -x``."""
    debdir = workdir / "debs"
    debdir.mkdir(parents=True, exist_ok=True)
    attempts = [f"{name}={version}", name] if version else [name]
    for spec in attempts:
        done = subprocess.run(
            ["apt-get", "download", spec], cwd=debdir, capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            break
        print(
            f"  apt-get download {spec} failed: {done.stderr.strip().splitlines()[-1:]}",
            file=sys.stderr,
        )
    else:
        raise SystemExit(
            f"cannot download {name}: is the Debian mirror reachable? (try `apt-get update` first)"
        )
    debs = sorted(debdir.glob(f"{name}_*.deb"))
    if not debs:
        raise SystemExit(f"apt-get reported success but no {name}_*.deb in {debdir}")
    deb = debs[-1]
    got = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if version and got != version:
        print(
            f"  warning: {name} {got} instead of listed {version}; "
            "sha256 checks decide whether the images are the same",
            file=sys.stderr,
        )
    root = workdir / "x" / name
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return Package(name, got, root)


def package_images(pkg: Package) -> Iterator[str]:
    """Regular image files (symlinks are duplicate sizes of one file), package-relative."""
    for dirpath, _dirs, files in os.walk(pkg.root):
        for f in files:
            p = Path(dirpath) / f
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_symlink():
                yield p.relative_to(pkg.root).as_posix()


def file_license(pkg: Package, relpath: str) -> str:
    """License of an installed file from the DEP-5 copyright file.

    Patterns are source-tree paths (``nature/Aqua.jpg``), installed paths are
    longer, so a pattern matches when it matches a path suffix; as DEP-5 says,
    the last matching stanza wins.
    """
    text = pkg.copyright().read_text(encoding="utf-8", errors="replace")
    found = "UNKNOWN"
    for stanza in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t].*)*)", stanza, re.M)
        lic = re.search(r"^License:\s*(\S+)", stanza, re.M)
        if not files or not lic:
            continue
        for pattern in files.group(1).split():
            if pattern == "*" or fnmatch.fnmatch(relpath, "*/" + pattern):
                found = lic.group(1)
    return found


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- heuristic


def group_key(package: str, relpath: str) -> str:
    """Images that are one picture at several sizes, crops or dark variants.

    Plasma packs each wallpaper in ``wallpapers/<Name>/contents/images*/WxH.ext``;
    MATE names sizes ``Name_WxH.jpg``.
    """
    parts = relpath.split("/")
    if "wallpapers" in parts and "contents" in parts:
        return f"{package}:{parts[parts.index('contents') - 1]}"
    stem = re.sub(r"_\d+x\d+$", "", Path(relpath).stem)
    return f"{package}:{stem}"


def photo_features(im: Image.Image) -> dict[str, float]:
    """Natural-image statistics that vector art, gradients and renders lack.

    Computed on grey at <= 2560 px (integer box reduction) to bound memory:
    - flat_blocks: 16x16 blocks with std < 1 level (renders have big exact flats);
    - zero_lap: pixels whose Laplacian is < 0.5 (linear gradients are exactly 0);
    - noise: Immerkaer's noise estimate in grey levels (photos > 0, paintings with
      added grain far above what survives JPEG in a photo);
    - grey_levels: distinct 8-bit luminance values (posterised art has few).
    """
    factor = max(1, -(-max(im.size) // 2560))
    grey = im.convert("L")
    if factor > 1:
        grey = grey.reduce(factor)
    g = np.asarray(grey, dtype=np.float32)
    k = (
        g[:-2, :-2]
        - 2 * g[:-2, 1:-1]
        + g[:-2, 2:]
        - 2 * g[1:-1, :-2]
        + 4 * g[1:-1, 1:-1]
        - 2 * g[1:-1, 2:]
        + g[2:, :-2]
        - 2 * g[2:, 1:-1]
        + g[2:, 2:]
    )
    noise = float(np.sqrt(np.pi / 2) * np.mean(np.abs(k)) / 6)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    h, w = (g.shape[0] // 16) * 16, (g.shape[1] // 16) * 16
    blocks = g[:h, :w].reshape(h // 16, 16, w // 16, 16).std(axis=(1, 3))
    return {
        "flat_blocks": float((blocks < 1.0).mean()),
        "zero_lap": float((np.abs(lap) < 0.5).mean()),
        "noise": noise,
        "grey_levels": float(len(np.unique(g.astype(np.uint8)))),
    }


def looks_like_photo(path: Path) -> tuple[bool, str]:
    """The pre-filter: file type, size, no transparency, natural statistics."""
    with Image.open(path) as im:
        if im.format not in ("JPEG", "PNG"):
            return False, f"format {im.format}"
        w, h = im.size
        if min(w, h) < MIN_SHORT_SIDE or max(w, h) < MIN_LONG_SIDE:
            return False, f"small {w}x{h}"
        if "A" in im.getbands() or "transparency" in im.info:
            alpha = im.convert("RGBA").getchannel("A")
            lo = alpha.getextrema()[0]
            if isinstance(lo, (int, float)) and lo < 255:
                return False, "transparent"
        f = photo_features(im.convert("RGB"))
    desc = " ".join(f"{k}={v:.3g}" for k, v in f.items())
    ok = (
        f["flat_blocks"] < MAX_FLAT_BLOCKS
        and f["zero_lap"] < MAX_ZERO_LAPLACIAN
        and f["noise"] < MAX_NOISE
        and f["grey_levels"] >= MIN_GREY_LEVELS
    )
    return ok, desc


def rebuild_list(packages: list[Package], out: Path) -> None:
    """Run the heuristic; keep the largest file of each group; write candidates."""
    best: dict[str, tuple[int, Entry]] = {}
    seen: set[str] = set()
    for pkg in packages:
        print(f"== {pkg.name} {pkg.version}")
        for rel in sorted(package_images(pkg)):
            path = pkg.root / rel
            if "screenshot" in Path(rel).stem:
                continue
            digest = sha256_file(path)
            if digest in seen:
                continue
            seen.add(digest)
            ok, why = looks_like_photo(path)
            print(f"  {'KEEP' if ok else 'drop'} {rel}  {why}")
            if not ok:
                continue
            with Image.open(path) as im:
                w, h = im.size
            entry = Entry(pkg.name, rel, digest, w, h, file_license(pkg, rel), "train")
            key = group_key(pkg.name, rel)
            if key not in best or w * h > best[key][0]:
                best[key] = (w * h, entry)
    entries = sorted((e for _, e in best.values()), key=lambda e: (e.package, e.path))
    write_list(
        out,
        packages,
        entries,
        "CANDIDATES from the heuristic: look at every image, delete non-photos, "
        "mark held-out ones `sample`.",
    )
    print(f"wrote {len(entries)} candidates to {out}")


# --------------------------------------------------------------------------- preparation


def reduction_factor(width: int, height: int) -> int:
    """Largest integer factor keeping the shorter side >= MIN_SIDE.

    For factor >= 2 the result is then below MAX_SIDE, and the largest factor
    removes the most compression artefacts and noise.
    """
    return max(1, min(width, height) // MIN_SIDE)


def prepare_image(data: bytes) -> Image.Image:
    """Decode, make RGB, centre-crop to a multiple of the factor, box-reduce."""
    with Image.open(io.BytesIO(data)) as src:
        im = src.convert("RGB")
    f = reduction_factor(*im.size)
    w, h = (im.width // f) * f, (im.height // f) * f
    left, top = (im.width - w) // 2, (im.height - h) // 2
    im = im.crop((left, top, left + w, top + h))
    return im.reduce(f) if f > 1 else im


def output_name(entry: Entry) -> str:
    parts = entry.path.split("/")
    name = parts[parts.index("contents") - 1] if "contents" in parts else Path(entry.path).stem
    return f"{SHORT_NAMES.get(entry.package, entry.package)}-{name}.png"


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) / 1e6


def prepare(packages: dict[str, Package], entries: list[Entry], out: Path, samples: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    samples.mkdir(parents=True, exist_ok=True)
    sources: dict[Path, list[str]] = {out: [], samples: []}
    for e in entries:
        src = packages[e.package].root / e.path
        if not src.is_file():
            raise SystemExit(f"{e.package} has no {e.path}; rerun with --rebuild-list")
        data = src.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != e.sha256:
            raise SystemExit(
                f"sha256 mismatch for {e.package}:{e.path}: got {digest}, "
                f"listed {e.sha256}; the package changed, review it again"
            )
        im = prepare_image(data)
        dest_dir = out if e.use == "train" else samples
        dest = dest_dir / output_name(e)
        im.save(dest, format="PNG", compress_level=9)
        sources[dest_dir].append(
            "\t".join(
                [
                    dest.name,
                    f"{im.width}x{im.height}",
                    e.package,
                    packages[e.package].version,
                    e.path,
                    e.sha256,
                    e.license,
                ]
            )
        )
        print(
            f"  {e.use:6s} {dest.name:28s} {e.width}x{e.height} -> "
            f"{im.width}x{im.height} (/{reduction_factor(e.width, e.height)})"
        )
    for folder, rows in sources.items():
        (folder / "SOURCES.tsv").write_text(
            "file\tsize\tpackage\tversion\tpath\tsha256\tlicense\n" + "\n".join(rows) + "\n",
            encoding="utf-8",
        )
    for pkg in packages.values():  # licences travel with the images
        shutil.copyfile(pkg.copyright(), out / f"COPYRIGHT.{pkg.name}")
        shutil.copyfile(pkg.copyright(), samples / f"COPYRIGHT.{pkg.name}")
    size = folder_mb(out)
    print(
        f"{sum(e.use == 'train' for e in entries)} training images in {out}: {size:.1f} MB; "
        f"{sum(e.use == 'sample' for e in entries)} samples in {samples}"
    )
    if size > SIZE_BUDGET_MB:
        print(f"warning: {out} is over the {SIZE_BUDGET_MB} MB budget", file=sys.stderr)


def report(packages: dict[str, Package], entries: list[Entry]) -> None:
    for pkg in packages.values():
        files = list(package_images(pkg))
        kept = [e for e in entries if e.package == pkg.name]
        print(
            f"{pkg.name} {pkg.version}: {len(files)} image files, "
            f"{sum(e.use == 'train' for e in kept)} train, "
            f"{sum(e.use == 'sample' for e in kept)} sample"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=REPO / "data" / "train",
        help="folder for the prepared training PNGs",
    )
    ap.add_argument(
        "--samples",
        type=Path,
        default=REPO / "data" / "samples",
        help="folder for the held-out sample PNGs",
    )
    ap.add_argument(
        "--list", type=Path, default=DEFAULT_LIST, help="hand-checked image list to use"
    )
    ap.add_argument(
        "--rebuild-list",
        type=Path,
        metavar="PATH",
        help="run the photo heuristic over all packages and write a candidate "
        "list to PATH for review (nothing is prepared)",
    )
    ap.add_argument(
        "--keep-debs",
        type=Path,
        metavar="DIR",
        help="download and extract into DIR and keep it (default: a temp dir)",
    )
    args = ap.parse_args(argv)

    workdir = args.keep_debs or Path(tempfile.mkdtemp(prefix="mprnet-wallpapers-"))
    try:
        if args.rebuild_list:
            pkgs = [fetch_package(name, None, workdir) for name in PACKAGES]
            rebuild_list(pkgs, args.rebuild_list)
            return 0
        versions, entries = read_list(args.list)
        names = sorted({e.package for e in entries})
        packages = {n: fetch_package(n, versions.get(n), workdir) for n in names}
        prepare(packages, entries, args.out, args.samples)
        report(packages, entries)
        return 0
    finally:
        if not args.keep_debs:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
