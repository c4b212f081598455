"""Where the lab's shipped files are: the one place that knows the repository's layout.

Everything under ``assets/`` carries its licence and provenance beside it (``assets/README.md``).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"

BOOK = ASSETS / "book"  # the book's sample text and images (Apache-2.0, assets/book/NOTICE.md)
BOOK_IMAGES = BOOK / "images"
BOOK_IMAGE_NAMES = ("car.png", "puppy.png", "cat.png")  # the book's images, as chapter 9 shows them
TOKENIZER_SAMPLE = BOOK / "tokenizer_sample.txt"
TOKENIZERS = ASSETS / "tokenizers"  # converted vocabularies (assets/tokenizers/PROVENANCE.md)
GALLERY = ASSETS / "gallery"  # CLIP's default gallery photos (assets/gallery/SOURCES.md)
CORPORA = ASSETS / "corpora"  # topic-modelling corpora with their embeddings
FINETUNE = ASSETS / "finetune"  # the fine-tuning chats
JS = ASSETS / "js"  # scripts the pages load (no CDN: classrooms may be offline)
