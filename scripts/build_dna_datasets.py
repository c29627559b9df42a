"""Build the DNA files bundled in ``omicformer.datasets`` from their public sources.

Run from the repository root (Debian/Ubuntu with ``apt-get`` and ``dpkg-deb``; R is *not* needed)::

    pip install pyjaspar biopython pyfaidx numpy
    python scripts/build_dna_datasets.py            # downloads the two .deb files with apt-get
    python scripts/build_dna_datasets.py --r-library /usr/lib/R/site-library   # or use an R install

Inputs
------
- Debian ``r-bioc-bsgenome`` (1.66.3): ``BSgenome/extdata/ce2chrX.fa.gz``, C. elegans (UCSC ce2)
  chromosome X, 17,718,849 bp.
- Debian ``r-bioc-biostrings`` (2.66.0): ``Biostrings/extdata/dm3_upstream2000.fa.gz`` (26,454
  D. melanogaster dm3 RefSeq 2 kb upstream regions) and ``Biostrings/data/HNF4alpha.rda`` (71
  HNF4alpha binding sites). The ``.rda`` is decoded here without R: it is an XDR-serialised
  ``DNAStringSet`` whose pool is one RAW vector of Biostrings byte codes (A=1, C=2, G=4, T=8,
  IUPAC codes are bit unions) cut by integer ``start``/``width`` vectors.
- PyPI ``pyjaspar`` (4.0.0): ``pyjaspar/data/JASPAR2024.sqlite``.

Outputs (in ``src/omicformer/datasets/data/``; rerunning gives byte-identical files)
-------
- ``dna_ce2_chrX_0-4000000.fa.gz`` (+ ``.fai``, ``.gzi``): ce2 chrX bases [0, 4,000,000)
  (0-based half-open, i.e. chrX:1-4,000,000), record name ``chrX`` so coordinates equal ce2
  coordinates; BGZF (bgzip) compressed with 60-bp lines, indexed for ``pyfaidx``.
- ``dna_dm3_upstream2000_subset.fa.gz``: 6,000 non-overlapping dm3 upstream regions, upper-cased.
  Rule: drop exact duplicate coordinates (alternative transcripts sharing a TSS; their
  transcript ids are kept in ``transcripts=``); keep full-length (2,000 bp) regions on
  chr2L/2R/3L/3R/4/X; merge regions that overlap on either strand into clusters; draw 6,000
  clusters with ``numpy.random.default_rng(20240607).choice(n_clusters, 6000, replace=False)``;
  in each drawn cluster keep the region supported by the most transcripts (ties: lowest start,
  then ``+`` before ``-``). Header: ``>NAME CHROM:START-END(STRAND) transcripts=... other_tss=...``
  where NAME is the original UCSC record name of the region's first transcript (unique; a few
  RefSeq ids map to several loci) and coordinates are 0-based half-open; ``other_tss`` lists other annotated TSSs (any transcript in
  the full file, either strand) within 1 kb of the region, as offsets in the region's 5'->3'
  sequence coordinates (the region's own TSS is offset 2000).
- ``dna_hnf4alpha_sites.txt``: the 71 13-bp sites, one per line, in the ``.rda`` order.
- ``dna_jaspar2024_motifs.json``: count matrices (rows A, C, G, T) and annotation of the latest
  CORE version of a few well-known motifs (see ``MOTIFS``), plus MA0114.4 (13 bp, HNF4A).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import sqlite3
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "omicformer" / "datasets" / "data"
CE_END = 4_000_000
DM3_N = 6000
DM3_SEED = 20240607
DM3_CHROMS = {"chr2L", "chr2R", "chr3L", "chr3R", "chr4", "chrX"}
OTHER_TSS_FLANK = 1000
MOTIFS = [  # JASPAR base ids: latest CORE version of each is exported
    "MA0114",  # HNF4A
    "MA0139",  # CTCF
    "MA0035",  # GATA1
    "MA0079",  # SP1
    "MA0047",  # FOXA2
    "MA0466",  # CEBPB
    "MA0138",  # REST
    "MA0095",  # Yy1
    "MA0108",  # TBP
    "MA0506",  # Nrf1
    "MA0028",  # ELK1
    "MA0205",  # Trl (Drosophila GAGA factor)
]
EXTRA_MATRICES = ["MA0114.4"]
# Biostrings DNA byte codes: one bit per base, IUPAC ambiguity codes are the unions.
_DNA_CODES = dict(
    zip([1, 2, 4, 8, 3, 5, 9, 6, 10, 12, 7, 11, 13, 14, 15], "ACGTMRWSYKVHDBN", strict=True)
)


def fetch_r_library(workdir: Path) -> Path:
    """Download and unpack the two Debian packages; return their R site-library folder."""
    for pkg in ("r-bioc-bsgenome", "r-bioc-biostrings"):
        subprocess.run(["apt-get", "download", pkg], cwd=workdir, check=True)
    for deb in sorted(workdir.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "root")], check=True)
    return workdir / "root" / "usr" / "lib" / "R" / "site-library"


def read_fasta(path: Path) -> list[tuple[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    records, header, chunks = [], None, []
    with opener(path, "rt") as fh:
        for line in fh:
            line = line.rstrip()
            if line.startswith(">"):
                if header is not None:
                    records.append((header, "".join(chunks)))
                header, chunks = line[1:], []
            elif line:
                chunks.append(line)
    if header is not None:
        records.append((header, "".join(chunks)))
    return records


def wrap(seq: str, width: int = 60) -> str:
    return "\n".join(seq[i : i + width] for i in range(0, len(seq), width)) + "\n"


def build_ce(r_library: Path, out: Path) -> None:
    from Bio import bgzf
    from pyfaidx import Fasta

    ((name, seq),) = read_fasta(r_library / "BSgenome" / "extdata" / "ce2chrX.fa.gz")
    assert name == "chrX", name
    assert len(seq) == 17_718_849, len(seq)
    piece = seq[:CE_END]
    path = out / f"dna_ce2_chrX_0-{CE_END}.fa.gz"
    for suffix in ("", ".fai", ".gzi"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with bgzf.BgzfWriter(str(path), "wb") as fh:
        fh.write(f">chrX ce2 chrX:1-{CE_END} (1-based)\n".encode())
        fh.write(wrap(piece).encode())
    fa = Fasta(str(path))  # writes .fai and .gzi next to the file
    assert str(fa["chrX"][:50]) == piece[:50]
    assert len(fa["chrX"]) == CE_END
    fa.close()


def build_dm3(r_library: Path, out: Path) -> None:
    records = read_fasta(r_library / "Biostrings" / "extdata" / "dm3_upstream2000.fa.gz")
    assert len(records) == 26_454, len(records)
    rx = re.compile(r"^(\S+?)_up_2000_\S+_([fr]) (\S+):(-?\d+)-(\d+)$")
    regions: dict[tuple, dict] = {}
    all_tss: dict[str, set[int]] = {}
    for header, seq in records:
        tx, fr, chrom, a, b = rx.match(header).groups()
        start, end, strand = int(a) - 1, int(b), "+" if fr == "f" else "-"
        tss = end if strand == "+" else start - 1  # 0-based first transcribed base
        all_tss.setdefault(chrom, set()).add(tss)
        key = (chrom, start, end, strand)
        reg = regions.setdefault(
            key, {"seq": seq.upper(), "tx": [], "tss": tss, "name": header.split()[0]}
        )
        assert reg["seq"] == seq.upper()
        reg["tx"].append(tx)
    keys = sorted(k for k in regions if k[0] in DM3_CHROMS and k[2] - k[1] == 2000 and k[1] >= 0)
    clusters: list[list[tuple]] = []
    cur_end = -1
    for k in keys:  # sorted by chrom, start: merge overlaps on either strand
        if clusters and clusters[-1][0][0] == k[0] and k[1] < cur_end:
            clusters[-1].append(k)
            cur_end = max(cur_end, k[2])
        else:
            clusters.append([k])
            cur_end = k[2]
    pick = np.random.default_rng(DM3_SEED).choice(len(clusters), DM3_N, replace=False)
    chosen = []
    for ci in pick:
        chosen.append(min(clusters[ci], key=lambda k: (-len(regions[k]["tx"]), k[1], k[3])))
    chosen.sort()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as fh:
        for key in chosen:
            chrom, start, end, strand = key
            reg = regions[key]
            others = []
            for t in sorted(all_tss[chrom]):
                if t != reg["tss"] and start - OTHER_TSS_FLANK <= t < end + OTHER_TSS_FLANK:
                    others.append(t - start if strand == "+" else end - 1 - t)
            header = (
                f">{reg['name']} {chrom}:{start}-{end}({strand}) "
                f"transcripts={','.join(reg['tx'])} other_tss={','.join(map(str, sorted(others)))}"
            )
            fh.write(f"{header}\n{wrap(reg['seq'])}".encode())
    (out / "dna_dm3_upstream2000_subset.fa.gz").write_bytes(buf.getvalue())
    print(f"dm3: {len(regions)} unique regions, {len(clusters)} clusters, kept {len(chosen)}")


def _sexp_vectors(data: bytes, sexptype: int) -> list[tuple[int, int]]:
    """(offset of payload, length) of every vector of ``sexptype`` with no attributes."""
    hits = []
    for m in re.finditer(re.escape(struct.pack(">i", sexptype)), data):
        i = m.start()
        if i + 8 > len(data):
            continue
        (n,) = struct.unpack(">i", data[i + 4 : i + 8])
        if 0 < n < len(data):
            hits.append((i + 8, n))
    return hits


def build_hnf4a(r_library: Path, out: Path) -> None:
    data = gzip.decompress((r_library / "Biostrings" / "data" / "HNF4alpha.rda").read_bytes())
    assert data.startswith(b"RDX2\nX\n"), "expected an XDR-serialised R data file"
    (raw_at, raw_len), *rest = [(i, n) for i, n in _sexp_vectors(data, 24) if n > 100]
    assert not rest, "expected exactly one RAW pool"
    pool = data[raw_at : raw_at + raw_len]
    ints = {}
    for i, n in _sexp_vectors(data, 13):
        if 10 < n < 10_000 and i + 4 * n <= len(data):
            ints.setdefault(n, []).append(struct.unpack(f">{n}i", data[i : i + 4 * n]))
    # start/width vectors: starts increasing from 1 and start + width tiling the pool
    starts = widths = None
    for n, vecs in ints.items():
        for s in vecs:
            for w in vecs:
                if s[0] == 1 and all(s[j] + w[j] == s[j + 1] for j in range(n - 1)):
                    if s[-1] + w[-1] - 1 == raw_len:
                        starts, widths = s, w
    assert starts is not None, "could not find the start/width vectors"
    sites = [
        "".join(_DNA_CODES[b] for b in pool[s - 1 : s - 1 + w])
        for s, w in zip(starts, widths, strict=True)
    ]
    assert len(sites) == 71, len(sites)
    assert {len(s) for s in sites} == {13}, sites
    assert sites[0] == "AGTTCAAGGATCA"
    head = (
        "# 71 HNF4alpha binding sites, Bioconductor Biostrings 2.66.0 data(HNF4alpha)\n"
        "# (Artistic-2.0); exported by scripts/build_dna_datasets.py\n"
    )
    (out / "dna_hnf4alpha_sites.txt").write_text(head + "\n".join(sites) + "\n")


def build_jaspar(out: Path) -> None:
    import pyjaspar

    db = Path(pyjaspar.__file__).parent / "data" / "JASPAR2024.sqlite"
    con = sqlite3.connect(db)
    ids = []
    for base in MOTIFS:
        row = con.execute(
            "SELECT ID, VERSION FROM MATRIX WHERE BASE_ID=? AND COLLECTION='CORE' "
            "ORDER BY VERSION DESC LIMIT 1",
            (base,),
        ).fetchone()
        ids.append(row[0])
    for mid in EXTRA_MATRICES:
        base, version = mid.split(".")
        row = con.execute(
            "SELECT ID FROM MATRIX WHERE BASE_ID=? AND VERSION=? AND COLLECTION='CORE'",
            (base, int(version)),
        ).fetchone()
        ids.append(row[0])
    motifs = {}
    for internal in ids:
        base, version, name = con.execute(
            "SELECT BASE_ID, VERSION, NAME FROM MATRIX WHERE ID=?", (internal,)
        ).fetchone()
        ann = dict(con.execute("SELECT TAG, VAL FROM MATRIX_ANNOTATION WHERE ID=?", (internal,)))
        species = [
            r[0] for r in con.execute("SELECT TAX_ID FROM MATRIX_SPECIES WHERE ID=?", (internal,))
        ]
        rows = con.execute(
            "SELECT row, col, val FROM MATRIX_DATA WHERE ID=? ORDER BY row, col", (internal,)
        ).fetchall()
        width = max(c for _, c, _ in rows)
        pfm = {b: [0.0] * width for b in "ACGT"}
        for b, c, v in rows:
            pfm[b.upper()][c - 1] = float(v)
        motifs[f"{base}.{version}"] = {
            "name": name,
            "class": ann.get("class"),
            "family": ann.get("family"),
            "tax_group": ann.get("tax_group"),
            "species_tax_id": species,
            "pfm": [pfm[b] for b in "ACGT"],
        }
    payload = {
        "source": "JASPAR 2024 CORE (Rauluseviciute et al., NAR 2024), via pyjaspar 4.0.0",
        "licence": "CC-BY-4.0",
        "rows": ["A", "C", "G", "T"],
        "motifs": motifs,
    }
    (out / "dna_jaspar2024_motifs.json").write_text(json.dumps(payload, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--r-library", type=Path, help="R site-library holding BSgenome/Biostrings")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        r_library = args.r_library or fetch_r_library(Path(tmp))
        build_ce(r_library, args.out)
        build_dm3(r_library, args.out)
        build_hnf4a(r_library, args.out)
    build_jaspar(args.out)
    for path in sorted(args.out.glob("dna_*")):
        print(f"{path.stat().st_size:>10,d}  {path.name}")


if __name__ == "__main__":
    main()
