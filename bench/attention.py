"""The ``attention`` section: the attention tab's calls warm, against loading the model for each call.

MiniLM attention on 64 tokens, SmolLM2's next token and the logit lens on a 10-token prompt, warm (median),
against the notebook way of loading the model with ``from_pretrained`` for each call.
"""

from __future__ import annotations

from bench.report import Row, Section
from bench.timing import median_ms

TITLE = "Attention"
TARGETS_MS = {"attention_64_ms": 150.0, "next_token_ms": 400.0, "logit_lens_ms": 1000.0}
PROMPT = "The capital of France is a big city with many"  # 10 SmolLM2 tokens (reported in the details)


def _text_of_64_tokens() -> str:
    from lab import attention, models

    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 7)[:300]
    tokenizer = models.tokenizer(attention.ENCODER)
    while len(tokenizer(text)["input_ids"]) > 64:
        text = text.rsplit(" ", 1)[0]
    return text


def _fresh_attention(text: str) -> None:
    """The notebook way: load MiniLM with eager attention for the call, then one forward pass."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from lab import attention, models

    folder = models.locate(attention.ENCODER)
    fresh = AutoModel.from_pretrained(folder, attn_implementation="eager")
    ids = AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")
    with torch.no_grad():
        fresh(**ids, output_attentions=True)


def _fresh_next_token(prompt: str) -> None:
    """The notebook way: load SmolLM2 for the call, then its top 10 next tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lab import attention, models

    folder = models.locate(attention.DECODER)
    fresh = AutoModelForCausalLM.from_pretrained(folder)
    ids = AutoTokenizer.from_pretrained(folder)(prompt, return_tensors="pt")
    with torch.no_grad():
        fresh(**ids).logits[0, -1].softmax(-1).topk(10)


def run(quick: bool) -> Section:
    """Each call warm (3 runs, 10 in full) against its fresh-load baseline (1 run, 3 in full)."""
    from lab import attention, models

    repeats, baseline_repeats = (3, 1) if quick else (10, 3)
    text = _text_of_64_tokens()
    attention.attention(text, attention.ENCODER)  # warm: load once
    attention.next_token(PROMPT)
    details = {
        "attention_tokens": len(models.tokenizer(attention.ENCODER)(text)["input_ids"]),
        "lens_prompt_tokens": len(models.tokenizer(attention.DECODER)(PROMPT)["input_ids"]),
        "attention_64_ms": median_ms(lambda: attention.attention(text, attention.ENCODER), repeats),
        "attention_fresh_ms": median_ms(lambda: _fresh_attention(text), baseline_repeats),
        "next_token_ms": median_ms(lambda: attention.next_token(PROMPT), repeats),
        "next_token_fresh_ms": median_ms(lambda: _fresh_next_token(PROMPT), baseline_repeats),
        "logit_lens_ms": median_ms(lambda: attention.logit_lens(PROMPT), max(1, repeats // 2)),
    }
    notebook = "baseline: from_pretrained for the call (the notebook)"
    rows = [
        Row(
            f"MiniLM attention, {details['attention_tokens']} tokens, warm (median)",
            details["attention_64_ms"],
            "ms",
            baseline=details["attention_fresh_ms"],
            note=notebook,
            target=TARGETS_MS["attention_64_ms"],
        ),
        Row(
            "SmolLM2 next token, warm (median)",
            details["next_token_ms"],
            "ms",
            baseline=details["next_token_fresh_ms"],
            note=notebook,
            target=TARGETS_MS["next_token_ms"],
        ),
        Row(
            f"SmolLM2 logit lens, {details['lens_prompt_tokens']}-token prompt",
            details["logit_lens_ms"],
            "ms",
            target=TARGETS_MS["logit_lens_ms"],
        ),
    ]
    return Section(TITLE, rows, details)
