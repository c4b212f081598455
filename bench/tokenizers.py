"""The ``tokenizers`` section: ``tokens.compare`` warm, against reloading every tokenizer on every call.

On the book's sample text across every tokenizer available here (median of many runs), against the book's
approach of calling ``AutoTokenizer.from_pretrained`` (or building the tiktoken encoding) on every call.
"""

from __future__ import annotations

from bench.report import Row, Section
from bench.timing import median_ms

TITLE = "Tokenizers"
WARM_TARGET_MS = 20.0
MIN_SPEEDUP = 50.0


def book_style_compare(text: str, names: list[str]) -> None:
    """The book's approach: load each tokenizer from its files on every call, then decode each id."""
    from lab import models

    for name in names:
        tokenizer = models.load_tokenizer_uncached(models.locate(name, "tokenizer"))
        if hasattr(tokenizer, "decode_single_token_bytes"):
            ids = tokenizer.encode(text, disallowed_special=())
            [tokenizer.decode_single_token_bytes(i) for i in ids]
        else:
            ids = tokenizer(text)["input_ids"]
            [tokenizer.decode([i]) for i in ids]


def run(quick: bool) -> Section:
    """Warm ``tokens.compare`` (20 runs, 200 in full) against the book's reload (1 run, 3 in full)."""
    from lab import tokens

    text = tokens.sample_text()
    names = tokens.available()
    tokens.compare(text, names)  # warm: every tokenizer loaded once into the cache
    warm = median_ms(lambda: tokens.compare(text, names), 20 if quick else 200)
    reload = median_ms(lambda: book_style_compare(text, names), 1 if quick else 3)
    details = {
        "tokenizers": len(names),
        "compare_warm_ms": warm,
        "reload_every_call_ms": reload,
        "speedup_vs_reload": reload / warm,
    }
    row = Row(
        f"compare, {len(names)} tokenizers, warm (median)",
        warm,
        "ms",
        baseline=reload,
        note="baseline: from_pretrained on every call (the book)",
        target=WARM_TARGET_MS,
        min_ratio=MIN_SPEEDUP,
    )
    return Section(TITLE, [row], details)
