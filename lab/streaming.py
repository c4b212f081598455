"""One way to stream generated text: :class:`TokenStream`, a generation thread that stops when you stop.

``model.generate`` blocks until it is done, so streaming runs it in a thread that feeds transformers'
``TextIteratorStreamer`` while the caller reads pieces of text. The danger is the thread outliving the
reader: a closed page or a Stop button ends the reading, and a thread left generating keeps the model
busy (and its lease returned while it still runs on it). A ``TokenStream`` prevents that:

- a stopping criterion checks a stop flag at every token;
- :meth:`TokenStream.close` (also on ``with`` exit) sets the flag and joins the thread before it returns.

Use it inside the model's lease, so the thread has ended before the model is released::

    with models.causal_lm(model_id) as network, TokenStream(network, tokenizer, input_ids=ids) as stream:
        for piece in stream:
            ...
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from lab import deadline

# Threads started here are named with this prefix, so a test (or the System panel) can count them.
THREAD_PREFIX = "lab-generate"


def _stop_when_set(event: threading.Event, seen: dict[str, Any]) -> Any:
    """A stopping criterion that ends generation at the next token once ``event`` is set; it also notes
    in ``seen`` the sequence's length and last token so far (why generation ended, afterwards)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopWhenSet(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> Any:
            seen["length"], seen["last"] = input_ids.shape[1], int(input_ids[0, -1])
            return torch.full(
                (input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([StopWhenSet()])


class TokenStream:
    """Iterate over the text pieces ``model.generate(**generate_kwargs)`` produces, as they come.

    Args:
        model: a transformers model with ``generate``.
        tokenizer: the tokenizer that decodes its output (a processor's ``tokenizer`` for BLIP-2).
        stop: an event that also stops generation when set (e.g. a Stop button's); optional.
        name: what the thread is called after the prefix, for logs.
        **generate_kwargs: passed to ``generate`` (``input_ids``, ``max_new_tokens``, …); ``pad_token_id``
            defaults to the tokenizer's padding token, else its end-of-text token.

    An error raised while generating (out of memory, a bad argument) is raised to the reader.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        stop: threading.Event | None = None,
        name: str = "text",
        **generate_kwargs: Any,
    ) -> None:
        from transformers import TextIteratorStreamer

        self.stop = stop or threading.Event()
        self._streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._failures: list[BaseException] = []
        self._model = model
        self._kwargs = {**generate_kwargs, "streamer": self._streamer}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._kwargs.setdefault("pad_token_id", pad)
        criteria = self._kwargs.pop("stopping_criteria", None) or []
        prompt = generate_kwargs.get("input_ids")
        self._seen: dict[str, Any] = {"prompt": prompt.shape[1] if prompt is not None else 0, "length": 0}
        self._kwargs["stopping_criteria"] = [*criteria, *_stop_when_set(self.stop, self._seen)]
        self._deadline = deadline.current()  # the request's time limit goes with it into the thread
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import torch

        try:
            with deadline.within(self._deadline), torch.inference_mode():
                self._model.generate(**self._kwargs)
        except BaseException as error:  # handed to the reading thread, which raises it
            self._failures.append(error)
            self._streamer.end()  # unblock the reader

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._streamer
            self._thread.join()
            if self._failures:
                raise self._failures[0]
        finally:
            self.close()

    def texts(self) -> Iterator[str]:
        """The whole text so far, once per new piece (what a chat box or a text area shows)."""
        text = ""
        for piece in self:
            text += piece
            yield text

    def close(self) -> None:
        """Stop generating at the next token and wait for the thread to end (idempotent)."""
        self.stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def new_tokens(self) -> int:
        """Tokens generated so far (of the first sequence)."""
        return max(0, self._seen["length"] - self._seen["prompt"]) if self._seen["length"] else 0

    @property
    def last_token(self) -> int | None:
        """The id of the last token generated, if any."""
        return self._seen.get("last") if self.new_tokens else None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def running_threads() -> list[str]:
    """Names of the generation threads alive now (0 when every stream has been closed)."""
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
