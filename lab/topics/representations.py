"""The book's representation table: each topic's c-TF-IDF words next to what KeyBERTInspired, MMR and a
text-generation model (Flan-T5, or SmolLM2 offline) make of them. The fitted model is not changed.

:func:`generate_label` is the forward step of the text-generation label.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab import catalog, engine, models, validate
from lab.forward import forward
from lab.topics.errors import TopicInputError
from lab.topics.results import TopicRun
from lab.topics.settings import FLAN_T5, SMOLLM2, Progress

REPRESENTATIONS = {"keybert": "KeyBERTInspired", "mmr": "MMR", "generation": "Text generation"}
# The book's prompt for a text-generation label (with Flan-T5).
BOOK_PROMPT = """I have a topic that contains the following documents:
[DOCUMENTS]

The topic is described by the following keywords: '[KEYWORDS]'.

Based on the documents and keywords, what is this topic about?"""

_LABEL_PREFIX = re.compile(r"^(?:the |this )?topic (?:is |seems to be )?(?:about |on |:)\s*", re.I)


def clean_label(text: str) -> str:
    """A generated answer as a label: first line, without "This topic is about", quotes and a final stop."""
    lines = text.strip().splitlines()
    label = _LABEL_PREFIX.sub("", lines[0].strip()) if lines else ""
    label = label.strip(" .\"'*")
    return label[:1].upper() + label[1:]


def default_generator() -> str:
    """Flan-T5 small (the book's) where it can be loaded, else SmolLM2-135M-Instruct (offline)."""
    try:
        models.source_of(FLAN_T5)
        return FLAN_T5
    except catalog.ModelUnavailable:
        return SMOLLM2


def _is_seq2seq(model_id: str) -> bool:
    """Whether a model is an encoder-decoder (Flan-T5): the catalog says, else its folder's config."""
    if catalog.is_known(model_id):
        return catalog.entry(model_id).kind == "seq2seq"
    config_file = Path(models.locate(model_id)) / "config.json"
    return config_file.is_file() and bool(json.loads(config_file.read_text()).get("is_encoder_decoder"))


LABEL_REQUEST = "\nAnswer with a short topic label only."


def generate_label(model_id: str, prompt: str) -> str:
    """A topic label from a prompt: Flan-T5 (encoder-decoder) reads it as it is; a chat model reads it as
    the user's message through its chat template. Greedy, a few words, cleaned by :func:`clean_label`.

    A chat model that a serving engine serves (:mod:`lab.engine`) answers there, with the same message and
    the engine's copy of the chat template; anything else runs here (:func:`_generate_label_here`). The
    topics tab's events hold their turn of the model queue either way: they embed documents in process too.
    """
    if engine.serves(model_id):
        messages = [{"role": "user", "content": prompt + LABEL_REQUEST}]
        return clean_label(engine.chat_text(model_id, messages, max_tokens=16))
    return _generate_label_here(model_id, prompt)


@forward("writing a topic label", duration=60)
def _generate_label_here(model_id: str, prompt: str) -> str:
    tokenizer = models.tokenizer(model_id)
    if _is_seq2seq(model_id):  # the book's Flan-T5
        with models.seq2seq_lm(model_id) as model:
            inputs = tokenizer(prompt, return_tensors="pt", truncation=True, max_length=512)
            inputs = {k: inputs[k].to(model.device) for k in ("input_ids", "attention_mask")}
            out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        return clean_label(tokenizer.decode(out[0], skip_special_tokens=True))
    import torch

    with models.causal_lm(model_id) as model:
        messages = [{"role": "user", "content": prompt + LABEL_REQUEST}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = (ids["input_ids"] if hasattr(ids, "keys") else ids).to(model.device)  # (1, T)
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=16,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    return clean_label(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def _text_generation(generate: Callable[[str], str], prompt: str) -> Any:
    """BERTopic's TextGeneration (the book's: 4 documents of 50 words each), with the lab's model loading."""
    from bertopic.representation import TextGeneration

    class _LabTextGeneration(TextGeneration):
        # TextGeneration insists on a transformers pipeline in its __init__; this is one in effect, with
        # the attributes its extract_topics reads (BERTopic 0.17).
        def __init__(self) -> None:
            self.random_state = 42
            self.model = lambda text, **_: [{"generated_text": generate(text)}]
            self.prompt = prompt
            self.default_prompt_ = ""
            self.pipeline_kwargs = {}
            self.nr_docs = 4
            self.diversity = None
            self.doc_length = 50
            self.tokenizer = "whitespace"
            self.prompts_ = []

    return _LabTextGeneration()


def _base_topics(run: TopicRun, frame: pd.DataFrame, n_words: int = 30) -> dict[int, list[tuple[str, float]]]:
    """The top ``n_words`` c-TF-IDF words per topic, as BERTopic hands them to representation models.

    The same computation as BERTopic's ``_extract_words_per_topic`` (0.17), through its private helpers.
    """
    model = run.model
    words = model.vectorizer_model.get_feature_names_out()
    labels = sorted(int(t) for t in frame.Topic.unique())
    indices = model._top_n_idx_sparse(model.c_tf_idf_, n_words)
    scores = model._top_n_values_sparse(model.c_tf_idf_, indices)
    order = np.argsort(scores, 1)
    indices = np.take_along_axis(indices, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    return {
        label: [
            (words[i], s) if i is not None and s > 0 else ("", 0.00001)
            for i, s in zip(indices[row][::-1], scores[row][::-1])
        ]
        for row, label in enumerate(labels)
    }


def _joined(updated: dict[int, list[tuple[str, float]]], shown: list[int], n_words: int) -> list[str]:
    return [" | ".join(w for w, _ in updated[t][:n_words] if w) for t in shown]


def _check_request(kinds: Sequence[str], diversity: float, prompt: str) -> None:
    if not kinds:
        raise TopicInputError("Choose at least one representation: KeyBERTInspired, MMR or text generation.")
    unknown = [k for k in kinds if k not in REPRESENTATIONS]
    if unknown:
        raise TopicInputError(
            f"Unknown representation {unknown[0]!r}: choose from {', '.join(REPRESENTATIONS)}."
        )
    if "mmr" in kinds and not 0 <= diversity <= 1:
        raise TopicInputError("MMR's diversity runs from 0 to 1.")
    if "generation" in kinds and "[DOCUMENTS]" not in prompt and "[KEYWORDS]" not in prompt:
        raise TopicInputError("The prompt needs [DOCUMENTS] and/or [KEYWORDS], where BERTopic fills them in.")


def _check_prompt_tokens(prompt: str, model_id: str) -> None:
    """The labelling prompt (before BERTopic fills in 4 documents of 50 words) within its token cap."""
    tokenizer = models.tokenizer(model_id)
    validate.check_tokens(
        prompt,
        validate.token_counter(tokenizer),
        validate.TOKEN_CAPS["topic_prompt"],
        what="The labelling prompt",
        where="topic labelling",
        error=TopicInputError,
    )


def compare_representations(
    run: TopicRun,
    docs: Sequence[str] | None = None,
    kinds: Sequence[str] = ("keybert", "mmr"),
    *,
    diversity: float = 0.2,
    n_words: int = 5,
    generator: str | None = None,
    prompt: str = BOOK_PROMPT,
    max_topics: int | None = None,
    generation_topics: int = 8,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The book's "Original / Updated" table, several side by side: the c-TF-IDF words of each topic and
    the words (or label) each representation model gives instead. The fitted model is not changed.

    Args:
        kinds: any of ``"keybert"`` (KeyBERTInspired), ``"mmr"`` (MaximalMarginalRelevance) and
            ``"generation"`` (a text-generation label from the book's [DOCUMENTS]/[KEYWORDS] prompt).
        diversity: MMR's diversity (0: c-TF-IDF order, 1: most diverse).
        generator: the text-generation model (default :func:`default_generator`).
        generation_topics: label only the first topics with the (slow) generator; "…" for the rest.

    Raises:
        TopicInputError: no or unknown kinds, a diversity out of range, a prompt without slots, or
            documents that are not the model's.
    """
    from bertopic.representation import KeyBERTInspired, MaximalMarginalRelevance

    _check_request(kinds, diversity, prompt)
    docs = list(docs) if docs is not None else run.docs
    if len(docs) != len(run.topics):
        raise TopicInputError(f"{len(docs):,} documents for a model fitted on {len(run.topics):,}.")
    model = run.model
    frame = pd.DataFrame({"Document": docs, "Topic": model.topics_, "ID": range(len(docs)), "Image": None})
    base = _base_topics(run, frame)
    shown = [t for t in sorted(base) if t != -1][:max_topics]
    table = pd.DataFrame({"Topic": shown})
    table["Original"] = _joined(base, shown, n_words)
    say = progress or (lambda fraction, text: None)
    for step, kind in enumerate(kinds):
        say(step / len(kinds), f"Representation: {REPRESENTATIONS[kind]}")
        if kind == "keybert":
            keybert = KeyBERTInspired(top_n_words=10, random_state=42)
            table["KeyBERTInspired"] = _joined(
                keybert.extract_topics(model, frame, model.c_tf_idf_, base), shown, n_words
            )
        elif kind == "mmr":
            mmr = MaximalMarginalRelevance(diversity=diversity, top_n_words=10)
            table[f"MMR (diversity {diversity:g})"] = _joined(
                mmr.extract_topics(model, frame, model.c_tf_idf_, base), shown, n_words
            )
        else:
            model_id = generator or default_generator()
            _check_prompt_tokens(prompt, model_id)
            labelled = shown[:generation_topics]
            subset = {t: base[t] for t in labelled}
            sub_frame = frame[frame.Topic.isin(labelled)]
            sub_ctfidf = model.c_tf_idf_[[sorted(base).index(t) for t in labelled]]
            representation = _text_generation(functools.partial(generate_label, model_id), prompt)
            updated = representation.extract_topics(model, sub_frame, sub_ctfidf, subset)
            name = model_id.split("/")[-1]
            table[f"Text generation ({name})"] = [
                updated[t][0][0].strip() if t in updated else "…" for t in shown
            ]
    say(1.0, "Representations ready")
    return table
