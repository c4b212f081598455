"""After a run: the same prompt through the base model and the fine-tuned one, side by side.

prepare (the run's base model, the prompt in the chat template the adapter was trained with) → forward
(:func:`answer_stream`: one model's greedy answer, streamed through :class:`lab.streaming.TokenStream`,
inside the model's lease) → the pair, as ``(base, tuned)`` so far.

With a serving engine (:mod:`lab.engine`), the base model's answer comes from the engine when it serves the
base model, and the tuned answer when it serves the run's adapter under ``adapter:<run id>`` in
``LAB_GENERATION_MODELS`` (vLLM serves LoRA adapters next to one base model: ``vllm serve <base>
--enable-lora --lora-modules <run id>=<run folder>/adapter``). The engine applies its own chat template
to the prompt; anything it does not serve runs here, as before.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lab import engine, models, validate
from lab.errors import InputError
from lab.finetune.config import model_and_path
from lab.finetune.data import chat_template, encode_text, render_chat
from lab.finetune.runs import SETTINGS
from lab.forward import forward
from lab.streaming import TokenStream

MAX_NEW_TOKENS = 1024


def base_model_of(adapter_dir: str | Path, base_model: str | None = None) -> str:
    """The base model of an adapter: as given, else as its run's settings or its adapter config say."""
    if base_model:
        return base_model
    adapter_dir = Path(adapter_dir)
    settings = adapter_dir.parent / SETTINGS
    if settings.is_file():
        return json.loads(settings.read_text())["config"]["base_model"]
    return json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]


def _prompt_ids(tokenizer: Any, model_id: str, prompt: str) -> list[int]:
    template = chat_template(tokenizer, model_id)
    text = render_chat(tokenizer, [{"role": "user", "content": prompt}], template, generation_prompt=True)
    return encode_text(tokenizer, text)


class Answer(str):
    """A finished answer's text, with why it ended: ``stopped`` is ``"end"`` (the model wrote its
    end-of-text token) or ``"limit"`` (it reached the new-token limit, still talking), after ``tokens``
    new tokens. A plain ``str`` everywhere else (the web API returns it as text)."""

    stopped: str
    tokens: int

    @classmethod
    def of(cls, text: str, stopped: str, tokens: int) -> Answer:
        answer = cls(text)
        answer.stopped, answer.tokens = stopped, tokens
        return answer


def _stop_ids(network: Any, tokenizer: Any) -> set[int]:
    """The token ids that end generation: the model's generation config's and the tokenizer's."""
    configured = getattr(getattr(network, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(getattr(tokenizer, "eos_token_id", None))
    return {i for i in ids if i is not None}


def stream_text(network: Any, tokenizer: Any, ids: list[int], max_new_tokens: int) -> Iterator[str]:
    """The text a model generates greedily after ``ids``, growing as it comes; the last item is an
    :class:`Answer` that says why it ended (end-of-text, or the token limit).

    Closing this generator (the page's Stop) ends the generation thread before it returns, so a caller
    that holds the model's lease releases it only once nothing runs on the model.
    """
    import torch

    input_ids = torch.tensor([ids], device=network.device)
    greedy = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "do_sample": False}
    with TokenStream(
        network, tokenizer, name="finetune-compare", max_new_tokens=max_new_tokens, **greedy
    ) as stream:
        text = ""
        for text in stream.texts():
            yield text
        ended = stream.last_token in _stop_ids(network, tokenizer)
        yield Answer.of(text, "end" if ended else "limit", stream.new_tokens)


@forward("answering with the base and the fine-tuned model", duration=120)
def answer_stream(
    model_id: str,
    path: str | None,
    adapter_dir: Path | None,
    tokenizer: Any,
    ids: list[int],
    max_new_tokens: int,
) -> Iterator[str]:
    """One model's greedy answer, growing: the base model, or base + adapter (merged) when given one."""
    lease = (
        models.causal_lm(model_id, path)
        if adapter_dir is None
        else models.causal_lm_with_adapter(model_id, adapter_dir, path)
    )
    with lease as network:
        yield from stream_text(network, tokenizer, ids, max_new_tokens)


def generate_pair_stream(
    prompt: str, base_model: str | None, adapter_dir: str | Path, max_new_tokens: int = 64
) -> Iterator[tuple[str, str]]:
    """Greedy answers of the base model, then of base + adapter (merged), as ``(base, tuned)`` so far.

    ``base_model`` may be None: the run's ``settings.json`` names it.

    Raises:
        InputError: no prompt, a token count out of range, a folder without an adapter.
    """
    if not (prompt or "").strip():
        raise InputError("Type a prompt first.")
    count = _whole(max_new_tokens)
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise InputError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json).")
    model_id, path = model_and_path(base_model_of(adapter_dir, base_model))
    tokenizer = models.tokenizer(model_id, path)
    validate.check_tokens(
        prompt,
        validate.token_counter(tokenizer),
        validate.TOKEN_CAPS["ft_compare"],
        what="The prompt",
        where="the comparison",
    )
    ids = _prompt_ids(tokenizer, model_id, prompt)
    messages = [{"role": "user", "content": prompt}]
    here = functools.partial(answer_stream, model_id, path)  # (adapter_dir, tokenizer, ids, count)
    base_text = ""
    # A model from a local folder (path) is not the engine's: only Hub ids are routed.
    for base_text in _answers(None if path else model_id, messages, count, here, None, tokenizer, ids):
        yield base_text, ""
    tuned = f"adapter:{adapter_dir.parent.name}"  # the run id: `--lora-modules <run id>=<adapter folder>`
    for tuned_text in _answers(tuned, messages, count, here, adapter_dir, tokenizer, ids):
        yield base_text, tuned_text


def _answers(
    served: str | None,
    messages: list[dict[str, Any]],
    count: int,
    in_process: Callable[..., Iterator[str]],
    *args: Any,
) -> Iterator[str]:
    """One greedy answer, growing: from the engine when it serves ``served``, else ``in_process(*args,
    count)`` here."""
    if served is not None and engine.serves(served):
        yield from engine.growing(engine.chat_stream(served, messages, count))
        return
    with engine.in_process_turn(), contextlib.closing(in_process(*args, count)) as texts:
        yield from texts


def _whole(max_new_tokens: Any) -> int:
    try:
        count = int(max_new_tokens)
    except (TypeError, ValueError):
        count = 0
    if not 1 <= count <= MAX_NEW_TOKENS:
        raise InputError(f"New tokens must be 1 to {MAX_NEW_TOKENS:,}, not {max_new_tokens!r}.")
    return count


def generate_pair(
    prompt: str, base_model: str | None, adapter_dir: str | Path, max_new_tokens: int = 64
) -> tuple[str, str]:
    """The same prompt through the base model and the fine-tuned one (greedy): ``(base_text, tuned_text)``."""
    last = ("", "")
    for last in generate_pair_stream(prompt, base_model, adapter_dir, max_new_tokens):  # noqa: B007
        continue
    return last
