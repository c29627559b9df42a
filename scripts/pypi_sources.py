"""The PyPI archives the bundled single-cell files come from, and how one file is read out.

``build_more_scrna_datasets.py`` builds ``src/omicformer/datasets/data/scrna_*.h5ad`` from
these: each :class:`Source` is one file inside one wheel or sdist, fetched with
``pip download --no-deps`` (nothing is installed) and checked against a pinned MD5.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """One data file inside one PyPI archive."""

    spec: str  # pip requirement
    sdist: bool  # source package (tar.gz) instead of a wheel
    member: str  # path inside the archive (sdists: below the top folder)
    md5: str
    license: str


SOURCES = {
    "pbmc3k": Source(
        "desc==2.1.1", False, "desc/datasets/pbmc.h5ad", "b8fc657a34bdc0cc381e12b57837f9c4", "MIT"
    ),
    "hlca": Source(
        "scArches==0.6.1",
        True,
        "notebooks/HLCA_query.h5ad",
        "f3f94e306347e103cd13c62cfddcde71",
        "BSD-3-Clause (LICENSE file); the package metadata says MIT",
    ),
    "gencode": Source(
        "celltypist==1.7.1",
        False,
        "celltypist/data/samples/GENCODEv44_Gene_id2name.csv",
        "206fee9d9af765f1402d489af98a43fb",
        "MIT",
    ),
    "wu2020": Source(
        "scirpy==0.22.5",
        False,
        "scirpy/tests/data/wu2020_200_v0_11.h5ad",
        "ff7c9264a954cc844677ca3be4f5eb83",
        "BSD-3-Clause",
    ),
    "oligodendroglioma": Source(
        "infercnvpy==0.6.1",
        False,
        "infercnvpy/datasets/data/oligodendroglioma.h5ad",
        "5ec7b69d1cf7c99d3f09e981d2d63672",
        "BSD-3-Clause",
    ),
    "cite_10k": Source(
        "scvi-tools==1.4.2",
        True,
        "tests/test_data/pbmc_10k_protein_v3.h5ad",
        "7fc505cb165d9b02bc68779af2316452",
        "BSD-3-Clause",
    ),
    "cite_5k": Source(
        "scvi-tools==1.4.2",
        True,
        "tests/test_data/pbmc_5k_protein_v3.h5ad",
        "f2b64fb89175c9b4a43ff9abe9a2ac4a",
        "BSD-3-Clause",
    ),
}
LEGACY_PIP = "pip==24.0"  # last pip that accepts desc 2.1.1's invalid requirement string


def pip_download(src: Source, workdir: Path) -> Path:
    """Download ``src.spec`` (no dependencies) into ``workdir``; return the archive."""
    name, version = src.spec.split("==")
    stem = name.replace("-", "_").lower()

    def find() -> Path | None:
        for path in sorted(workdir.iterdir()):
            low = path.name.lower().replace("-", "_")
            ext_ok = low.endswith(".tar.gz") if src.sdist else low.endswith(".whl")
            if ext_ok and low.startswith(f"{stem}_{version}"):
                return path
        return None

    if (found := find()) is not None:
        return found
    kind = ["--no-binary", ":all:"] if src.sdist else ["--only-binary", ":all:"]
    cmd = ["-m", "pip", "download", "--no-deps", *kind, src.spec, "-d", str(workdir)]
    run = subprocess.run([sys.executable, *cmd], check=False)
    if run.returncode != 0 and not src.sdist:
        print(f"pip refused {src.spec}; retrying with {LEGACY_PIP} run from its wheel")
        legacy = workdir / "_legacy_pip"
        legacy.mkdir(exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", LEGACY_PIP, "-d", str(legacy)],
            check=True,
        )
        wheel = next(legacy.glob("pip-*.whl"))
        subprocess.run([sys.executable, str(wheel / "pip"), *cmd[2:]], check=True)
    elif run.returncode != 0:
        msg = f"`pip download {src.spec}` failed (exit {run.returncode})"
        raise RuntimeError(msg)
    found = find()
    if found is None:
        msg = f"no archive for {src.spec} in {workdir} after pip download"
        raise FileNotFoundError(msg)
    return found


def extract(src: Source, workdir: Path) -> Path:
    """The file ``src.member`` extracted from its archive into ``workdir``, MD5-checked."""
    archive = pip_download(src, workdir)
    out = workdir / "extracted" / archive.name / src.member
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.sdist:
            with tarfile.open(archive) as tf:
                top = tf.getnames()[0].split("/")[0]
                fh = tf.extractfile(f"{top}/{src.member}")
                assert fh is not None
                out.write_bytes(fh.read())
        else:
            with zipfile.ZipFile(archive) as zf:
                out.write_bytes(zf.read(src.member))
    digest = hashlib.md5(out.read_bytes()).hexdigest()
    if digest != src.md5:
        msg = f"{src.spec}:{src.member} has MD5 {digest}, expected {src.md5}"
        raise ValueError(msg)
    return out
