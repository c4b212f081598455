"""The data of a fine-tune: chats read from a data set, rendered through a chat template, tokenized.

Three sources: ``"wikipedia-instruct"`` (offline: ``assets/finetune/``, CC BY-SA 4.0), ``"ultrachat"``
(the book's, from the Hub) or a JSONL file of chats (``messages``, ShareGPT or Alpaca shapes). A bad line
is skipped and reported by its number; a set with no usable chat is refused.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import catalog, models, paths
from lab.config import hub_offline
from lab.errors import InputError, LabError
from lab.finetune.config import BOOK_TEMPLATE_MODEL, FineTuneConfig, model_and_path

ULTRACHAT_REPO = "HuggingFaceH4/ultrachat_200k"
ULTRACHAT_SPLIT = "test_sft"
WIKIPEDIA_FILE = paths.FINETUNE / "wikipedia-instruct.jsonl.gz"
ROLES = ("system", "user", "assistant")
# TinyLlama-1.1B-Chat-v1.0's chat template (Zephyr's), which the book applies to the *base* TinyLlama's
# data; kept here so the book's preview renders offline too.
# Rendered: "<|user|>\n…</s>\n<|assistant|>\n…</s>\n".
TINYLLAMA_CHAT_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)


class DatasetUnavailable(LabError, ValueError):
    """A data set cannot be read here (the Hub is offline, or a package is missing); the message says why."""


Messages = list[dict[str, str]]


@dataclass
class Conversations:
    """Chats read from a data set: training ones, held-out ones, and what was skipped (with line numbers)."""

    train: list[Messages]
    eval: list[Messages]
    source: str
    problems: list[str] = field(default_factory=list)
    skipped: int = 0


def _normalise(record: Any) -> Messages:
    """One record as chat messages; accepts ``messages``, ShareGPT ``conversations`` and Alpaca shapes."""
    if not isinstance(record, dict):
        raise InputError("not a JSON object")
    if "messages" in record or "conversations" in record:
        raw = record.get("messages", record.get("conversations"))
        if not isinstance(raw, list) or not raw:
            raise InputError("'messages' must be a non-empty list")
        sharegpt = {"human": "user", "gpt": "assistant", "system": "system"}
        messages = []
        for turn in raw:
            if not isinstance(turn, dict):
                raise InputError("every message must be an object with 'role' and 'content'")
            role = turn.get("role", sharegpt.get(str(turn.get("from")), turn.get("from")))
            content = turn.get("content", turn.get("value"))
            if role not in ROLES:
                raise InputError(f"unknown role {role!r} (use system, user, assistant)")
            if not isinstance(content, str) or not content.strip():
                raise InputError(f"a {role} message has no text")
            messages.append({"role": role, "content": content})
    elif "instruction" in record or "prompt" in record:
        question = record.get("instruction", record.get("prompt"))
        extra = record.get("input") or ""
        answer = record.get("output", record.get("completion", record.get("response")))
        if not isinstance(question, str) or not isinstance(answer, str) or not answer.strip():
            raise InputError("needs text in 'instruction'/'prompt' and 'output'/'completion'")
        question = f"{question}\n\n{extra}" if extra else question
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    else:
        raise InputError("no 'messages' (or 'conversations', or 'instruction' + 'output') field")
    if not any(m["role"] == "assistant" for m in messages):
        raise InputError("no assistant message to learn from")
    return messages


def read_jsonl(path: str | Path, limit: int | None = None) -> tuple[list[Messages], list[str], int]:
    """Read chats from a JSONL file (``.gz`` too): the usable ones, problems by line number, lines skipped.

    Blank lines are ignored. Reading stops after ``limit`` usable chats.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"The data file {path} does not exist.")
    opener = gzip.open if path.suffix == ".gz" else open
    chats, problems, skipped = [], [], 0
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    skipped += 1
                    problems.append(f"line {number}: not valid JSON ({error.msg}, column {error.colno})")
                    continue
                try:
                    chats.append(_normalise(record))
                except InputError as error:
                    skipped += 1
                    problems.append(f"line {number}: {error}")
                if limit is not None and len(chats) >= limit:
                    break
    except (UnicodeDecodeError, OSError, EOFError) as error:
        raise InputError(f"{path.name} is not a UTF-8 JSONL file: {error}") from None
    return chats, problems, skipped


def ultrachat_indices(num_rows: int, count: int, seed: int = 42) -> list[int]:
    """Rows of 🤗 datasets' ``shuffle(seed).select(range(count))`` (a NumPy ``default_rng`` permutation)."""
    import numpy as np

    return np.random.default_rng(seed).permutation(num_rows)[:count].tolist()


def _ultrachat(count: int, seed: int) -> list[Messages]:
    """The book's data: ``ultrachat_200k`` test_sft, shuffled with ``seed``, the first ``count`` rows."""
    if hub_offline():
        raise DatasetUnavailable(
            f"UltraChat ({ULTRACHAT_REPO}) is on the Hugging Face Hub, which is offline here "
            "(HF_HUB_OFFLINE=1). Use 'wikipedia-instruct' (offline) or upload a JSONL file of chats."
        )
    import importlib.util

    try:
        if importlib.util.find_spec("datasets") is not None:
            from datasets import load_dataset  # the book's own code, where 🤗 datasets is installed

            rows = load_dataset(ULTRACHAT_REPO, split=ULTRACHAT_SPLIT).shuffle(seed=seed).select(range(count))
            return [[dict(m) for m in row["messages"]] for row in rows]
        # Without 🤗 datasets: the same split's Parquet files and the same permutation.
        import pyarrow.parquet as pq
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            ULTRACHAT_REPO, repo_type="dataset", allow_patterns=[f"data/{ULTRACHAT_SPLIT}-*.parquet"]
        )
        files = sorted(Path(folder).glob(f"data/{ULTRACHAT_SPLIT}-*.parquet"))
        messages = [m for f in files for m in pq.read_table(f, columns=["messages"]).column(0).to_pylist()]
    except Exception as error:  # network, Hub and parquet errors all mean "not here"
        raise DatasetUnavailable(f"UltraChat could not be downloaded: {str(error)[:300]}") from error
    return [[dict(m) for m in messages[i]] for i in ultrachat_indices(len(messages), count, seed)]


def _split_eval(rows: list[Messages], train_count: int, eval_count: int) -> tuple[list, list]:
    """Training rows first; held-out rows after them, or carved from the end (≤10 %) when short."""
    if len(rows) > train_count:
        return rows[:train_count], rows[train_count : train_count + eval_count]
    carve = min(eval_count, len(rows) // 10)
    if carve == 0:
        return rows, []
    return rows[:-carve], rows[-carve:]


def load_conversations(
    dataset: str, max_examples: int, eval_examples: int = 0, seed: int = 42
) -> Conversations:
    """Read a data set: ``"wikipedia-instruct"``, ``"ultrachat"`` or a JSONL path.

    Raises:
        DatasetUnavailable: UltraChat without the Hub.
        InputError: the file is missing, or holds no usable conversation (with the first problems).
    """
    wanted = max_examples + eval_examples
    problems: list[str] = []
    skipped = 0
    if dataset == "ultrachat":
        rows = _ultrachat(wanted, seed)
        source = f"{ULTRACHAT_REPO} {ULTRACHAT_SPLIT}, shuffle(seed={seed}), first {max_examples:,}"
    elif dataset == "wikipedia-instruct":
        rows, _, _ = read_jsonl(WIKIPEDIA_FILE, limit=wanted)
        source = "Wikipedia lead sections (CC BY-SA 4.0, assets/finetune/LICENSE.md)"
    else:
        rows, problems, skipped = read_jsonl(dataset, limit=wanted)
        source = Path(dataset).name
    if not rows:
        detail = "; ".join(problems[:5]) if problems else "the file is empty"
        raise InputError(f"No usable conversations in {source}: {detail}.")
    train, held_out = _split_eval(rows, max_examples, eval_examples)
    return Conversations(train, held_out, source, problems, skipped)


def chat_template(tokenizer: Any, model_id: str) -> str:
    """The template that turns chats into text: the tokenizer's own, else TinyLlama chat's (the book's)."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and own:
        return own
    try:  # where the Hub or a local copy has it, the book's template tokenizer itself
        book = getattr(models.tokenizer(BOOK_TEMPLATE_MODEL), "chat_template", None)
        if isinstance(book, str) and book:
            return book
    except catalog.ModelUnavailable:
        pass
    return TINYLLAMA_CHAT_TEMPLATE


def render_chat(tokenizer: Any, messages: Messages, template: str, generation_prompt: bool = False) -> str:
    """A chat as the model reads it, through the chat template."""
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
    )


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text, adding BOS as SFTTrainer does unless the template already wrote it."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    # verbose=False: long chats are truncated by the caller, transformers need not warn about them
    return list(tokenizer(text, add_special_tokens=add_special, verbose=False)["input_ids"])


def answer_spans(tokenizer: Any, messages: Messages, template: str) -> list[tuple[int, int]] | None:
    """Character spans of the assistant's turns in the rendered chat, each with its end-of-turn marker.

    A turn runs from where the chat rendered up to it *with a generation prompt* ends to where the chat
    rendered through it ends. ``None`` when the template does not render a chat turn by turn (a prefix
    renders differently), so that no span can be trusted.
    """
    text = render_chat(tokenizer, messages, template)
    spans = []
    for k, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = render_chat(tokenizer, messages[:k], template, generation_prompt=True) if k else ""
        through = render_chat(tokenizer, messages[: k + 1], template)
        if not (text.startswith(through) and through.startswith(before)):
            return None
        spans.append((len(before), len(through)))
    return spans


def encode_chat(tokenizer: Any, messages: Messages, template: str) -> tuple[list[int], list[bool] | None]:
    """Token ids of a rendered chat and, per token, whether it belongs to an answer (``None``: unknown).

    Token positions come from the tokenizer's character offsets, so a fast (Rust) tokenizer is needed;
    with a slow one, or a template that does not render turn by turn, the answers cannot be marked.
    """
    text = render_chat(tokenizer, messages, template)
    ids = encode_text(tokenizer, text)
    spans = answer_spans(tokenizer, messages, template)
    if spans is None or not getattr(tokenizer, "is_fast", False):
        return ids, None
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    offsets = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True, verbose=False)[
        "offset_mapping"
    ]
    if len(offsets) != len(ids):
        return ids, None
    answer = [any(a <= start < b for a, b in spans) and end > start for start, end in offsets]
    return ids, answer


@dataclass
class Tokenized:
    """Token ids of each training and held-out chat, cut to the max length, and how many were cut.

    ``train_loss`` / ``eval_loss`` say per token whether it counts for the loss (``None``: every token).
    """

    train: list[list[int]]
    eval: list[list[int]]
    truncated: int
    eval_truncated: int
    train_loss: list[list[bool]] | None = None
    eval_loss: list[list[bool]] | None = None

    @property
    def train_tokens(self) -> int:
        return sum(len(ids) for ids in self.train)


def tokenize(
    tokenizer: Any, chats: Conversations, template: str, max_length: int, answers_only: bool = False
) -> Tokenized:
    """Render every chat through the template and tokenize it; longer ones are truncated and counted.

    With ``answers_only`` each chat also gets its loss mask (its answers' tokens); a chat whose answers
    cannot be found is refused with the reason, rather than silently trained on its prompt too.
    """

    def encode(rows: list[Messages]) -> tuple[list[list[int]], list[list[bool]], int]:
        out, masks, cut = [], [], 0
        for messages in rows:
            if answers_only:
                ids, answer = encode_chat(tokenizer, messages, template)
                if answer is None:
                    raise LabError(
                        "Loss on answers only needs a fast tokenizer and a chat template that renders a "
                        "chat turn by turn; this model's do not. Untick it to train on every token."
                    )
            else:
                ids = encode_text(tokenizer, render_chat(tokenizer, messages, template))
                answer = [True] * len(ids)
            if len(ids) > max_length:
                ids, answer, cut = ids[:max_length], answer[:max_length], cut + 1
            if not any(answer):
                continue  # no answer token within the max length: nothing to learn from this chat
            out.append(ids)
            masks.append(answer)
        return out, masks, cut

    train, train_loss, truncated = encode(chats.train)
    held_out, eval_loss, eval_truncated = encode(chats.eval)
    if not train:
        raise LabError(
            f"No training chat has an answer within the first {max_length} tokens: raise the max "
            "sequence length, or untick loss on answers only."
        )
    if not answers_only:
        return Tokenized(train, held_out, truncated, eval_truncated)
    return Tokenized(train, held_out, truncated, eval_truncated, train_loss, eval_loss)


@dataclass(frozen=True)
class TurnEnd:
    """How the chat template ends an answer, and whether generation will stop there.

    A tuned model learns to write what the template puts after each answer; generation stops only at the
    model's end-of-text token. When the two differ, the tuned model "never stops talking".
    """

    marker: str  # what the template writes right after an answer's text ("<|im_end|>\n")
    stop_token: str | None  # the token generation stops at (the tokenizer's end-of-text)
    warning: str | None  # set when the marker does not end with a stop

    @property
    def stops(self) -> bool:
        return self.warning is None


ANSWER_PROBE = "LAB-ANSWER-PROBE"  # a text no template changes, to find what follows an answer


def turn_end(tokenizer: Any, template: str) -> TurnEnd:
    """What the template writes after an answer, checked against the token that stops generation."""
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ANSWER_PROBE}]
    text = render_chat(tokenizer, chat, template)
    marker = text[text.index(ANSWER_PROBE) + len(ANSWER_PROBE) :] if ANSWER_PROBE in text else ""
    stop = getattr(tokenizer, "eos_token", None)
    if not marker.strip():
        warning = (
            "The chat template writes nothing after an answer, so the tuned model never sees where an "
            "answer ends: expect it to run on to the token limit. Use a template that ends each turn."
        )
    elif not stop or stop not in marker:
        warning = (
            f"The chat template ends answers with {marker.strip()!r}, but generation stops at the "
            f"end-of-text token {stop!r}, which it never writes: the tuned model will learn to write "
            f"{marker.strip()!r} and keep talking. Make {marker.strip()!r} the end-of-text token or "
            "use a template that ends answers with it."
        )
    else:
        warning = None
    return TurnEnd(marker, stop, warning)


# -- preview ------------------------------------------------------------------------------------


@dataclass
class PreviewExample:
    """One chat as the model reads it: ``pieces`` are its tokens' texts, each with where it stands for
    the loss: ``"loss"`` (counts), ``"masked"`` (read but not counted) or ``"cut"`` (past the max length,
    never seen)."""

    text: str
    tokens: int
    truncated: bool
    pieces: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class DatasetPreview:
    """A few chats as the model will read them, with token counts, and figures for the whole set."""

    examples: list[PreviewExample]
    special_tokens: list[str]
    conversations: int
    held_out: int
    truncated: int
    mean_tokens: float
    max_tokens: int
    max_seq_length: int
    source: str
    problems: list[str]
    skipped: int
    answers_only: bool = False
    turn_end: TurnEnd | None = None


def token_pieces(
    tokenizer: Any, messages: Messages, template: str, max_length: int, answers_only: bool
) -> list[tuple[str, str]]:
    """A rendered chat cut into its tokens' texts, each marked "loss", "masked" or "cut" (see above)."""
    text = render_chat(tokenizer, messages, template)
    ids, answer = encode_chat(tokenizer, messages, template)
    if not getattr(tokenizer, "is_fast", False):
        return [(text, "loss")]
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    encoded = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True, verbose=False)
    pieces, cursor = [], 0
    for index, (_, end) in enumerate(encoded["offset_mapping"]):
        if end <= cursor:
            continue  # a token added outside the text (BOS): nothing to show
        if index >= max_length:
            kind = "cut"
        elif answers_only and answer is not None and not answer[index]:
            kind = "masked"
        else:
            kind = "loss"
        pieces.append((text[cursor:end], kind))
        cursor = end
    if cursor < len(text):
        pieces.append((text[cursor:], "cut" if len(ids) > max_length else "loss"))
    return pieces


def preview(config: FineTuneConfig, n: int = 3, chats: Conversations | None = None) -> DatasetPreview:
    """Render the first ``n`` chats through the model's chat template, mark which tokens count for the
    loss, check how answers end, and count tokens for all of them."""
    model_id, path = model_and_path(config.base_model)
    tokenizer = models.tokenizer(model_id, path)
    if chats is None:
        chats = load_conversations(config.dataset, config.max_examples, config.eval_examples, config.seed)
    template = chat_template(tokenizer, model_id)
    tokens = tokenize(tokenizer, chats, template, config.max_seq_length, config.answers_only)
    lengths = [len(ids) for ids in tokens.train]
    examples = []
    for messages in chats.train[:n]:
        text = render_chat(tokenizer, messages, template)
        count = len(encode_text(tokenizer, text))
        pieces = token_pieces(tokenizer, messages, template, config.max_seq_length, config.answers_only)
        examples.append(PreviewExample(text, count, count > config.max_seq_length, pieces))
    specials = sorted(
        {t for t in [*tokenizer.all_special_tokens, *getattr(tokenizer, "added_tokens_encoder", {})] if t},
        key=len,
        reverse=True,
    )
    return DatasetPreview(
        examples=examples,
        special_tokens=specials,
        conversations=len(tokens.train),
        held_out=len(tokens.eval),
        truncated=tokens.truncated,
        mean_tokens=sum(lengths) / max(1, len(lengths)),
        max_tokens=max(lengths),
        max_seq_length=config.max_seq_length,
        source=chats.source,
        problems=chats.problems,
        skipped=chats.skipped,
        answers_only=config.answers_only,
        turn_end=turn_end(tokenizer, template),
    )
