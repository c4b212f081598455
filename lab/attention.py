"""Look inside the forward pass (chapters 2 and 3): attention weights, the next-token distribution,
the logit lens, the model's structure and the KV cache.

Every function takes a model id (a catalog id such as ``"HuggingFaceTB/SmolLM2-135M-Instruct"``, or any id
with ``path=`` pointing at a folder) and returns plain data: numpy arrays, lists and dataclasses. The model
is leased from the shared cache for the forward pass only::

    from lab import attention
    attention.next_token("The capital of France is", "HuggingFaceTB/SmolLM2-135M-Instruct")[0]
    # (' Paris', 0.77)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lab import catalog, device, engine, models, validate
from lab.batching import alone, isolated
from lab.errors import InputError
from lab.forward import forward
from lab.streaming import TokenStream

MAX_TOKENS = validate.TOKEN_CAPS["attention"]
"""The longest input the attention views take (a 128×128 map per head stays readable and fast)."""
PROMPT_TOKENS = validate.TOKEN_CAPS["next_token"]
"""The longest prompt the next-token view and the KV-cache demo read."""
LENS_TOKENS = validate.TOKEN_CAPS["logit_lens"]

ENCODER = catalog.MINILM
DECODER = catalog.SMOLLM2
ATTENTION_MODELS = [
    ENCODER,
    DECODER,
    "bert-base-uncased",
    "gpt2",
    "microsoft/Phi-3-mini-4k-instruct",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "sentence-transformers/all-mpnet-base-v2",
    "microsoft/deberta-v3-xsmall",
]
DECODER_MODELS = [DECODER, "gpt2", "microsoft/Phi-3-mini-4k-instruct", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"]


class TooManyTokens(InputError):
    """The input is longer than the view takes; nothing was cut."""


# -- which model, which kind ----------------------------------------------------------------------


def is_decoder(model: models.ModelLike, path: str | Path | None = None) -> bool:
    """True for causal (decoder-only) language models, from the catalog or the model's config."""
    model = models.ref(model, path)
    if catalog.is_known(model.id) and model.path is None:
        return model.entry.kind == "causal-lm"
    config_file = Path(model.location("model")) / "config.json"
    if config_file.is_file():
        architectures = json.loads(config_file.read_text()).get("architectures") or []
        return any(name.endswith("ForCausalLM") for name in architectures)
    return model.entry.kind == "causal-lm"


def _lease(model: models.ModelRef, eager: bool) -> AbstractContextManager[Any]:
    if is_decoder(model):
        return models.causal_lm(model, eager=eager)
    return models.encoder(model, eager=eager)


def _encode(model: models.ModelRef, text: str, cap: int) -> tuple[Any, list[str]]:
    """Token ids (1, T) and each token decoded on its own, checking the cap first (a huge text is refused
    by its characters, before it is tokenized)."""
    tokenizer = models.tokenizer(model)
    validate.check_tokens(
        text,
        validate.token_counter(tokenizer),
        cap,
        what=f"The text (for {model.id})",
        where="this view",
        error=TooManyTokens,
    )
    ids = tokenizer(text, return_tensors="pt", verbose=False)["input_ids"]
    return ids, [tokenizer.decode([i]) for i in ids[0].tolist()]


# -- attention ------------------------------------------------------------------------------------


@dataclass
class AttentionResult:
    """Attention weights of every layer and head: ``weights[layer, head, query, key]``."""

    model: str
    tokens: list[str]
    weights: np.ndarray  # (layers, heads, T, T)
    special: list[bool]  # tokens the tokenizer added or treats as special ([CLS], <s> …)
    causal: bool
    text: str = ""  # what was read (links from its tokens quote it)

    @property
    def layers(self) -> int:
        return self.weights.shape[0]

    @property
    def heads(self) -> int:
        return self.weights.shape[1]


@dataclass(frozen=True)
class AttentionInput:
    """A text checked and tokenized for one model: the *prepare* step of the attention view.

    Inputs with the same :attr:`batch_key` can share one forward pass (:func:`attention_batch`).
    """

    model: models.ModelRef
    ids: tuple[int, ...]
    pieces: tuple[str, ...]
    special: tuple[bool, ...]
    text: str = ""  # what was read (the result keeps it: links from its tokens quote it)

    @property
    def batch_key(self) -> tuple[str, str, str | None]:
        return ("attention", self.model.id, self.model.path)


def prepare_attention(
    text: str, model: models.ModelLike = ENCODER, path: str | Path | None = None, max_tokens: int = MAX_TOKENS
) -> AttentionInput:
    """Check ``text`` (not empty, within ``max_tokens``) and tokenize it for ``model``; no model runs.

    Raises:
        TooManyTokens: the text is longer than ``max_tokens`` tokens.
        ModelUnavailable: the model's tokenizer cannot be loaded here.
    """
    model = models.ref(model, path)
    if not text.strip():
        raise InputError("Type some text first: attention needs at least one word.")
    ids, pieces = _encode(model, text, max_tokens)
    special_ids = set(models.tokenizer(model).all_special_ids)
    row = ids[0].tolist()
    return AttentionInput(model, tuple(row), tuple(pieces), tuple(i in special_ids for i in row), text)


@isolated
@forward("computing attention weights")
def attention_batch(inputs: list[AttentionInput]) -> list[AttentionResult]:
    """Every attention weight of each input's model on its text, in one forward pass for all of them.

    The texts are padded on the right and the padding is masked: a masked key gets exactly zero weight
    (its score is the dtype's minimum before the softmax), and in a decoder a position never sees the ones
    after it, so each text's ``(T, T)`` corner of the weights is what it gets alone (to about 1e-6).
    """
    import torch

    model = inputs[0].model
    lengths = torch.tensor([len(i.ids) for i in inputs])
    ids = torch.zeros(len(inputs), int(lengths.max()), dtype=torch.long)  # (B, T); 0 pads, masked
    for row, item in enumerate(inputs):
        ids[row, : len(item.ids)] = torch.tensor(item.ids)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()  # (B, T)
    with _lease(model, eager=True) as network:
        out = network(
            input_ids=ids.to(network.device), attention_mask=mask.to(network.device), output_attentions=True
        )
        stacked = torch.stack(out.attentions, dim=1).float().cpu()  # (B, layers, heads, T, T)
    causal = is_decoder(model)
    return [
        AttentionResult(
            model.id,
            list(item.pieces),
            stacked[row, :, :, :n, :n].numpy().copy(),  # (layers, heads, n, n): this text's own corner
            list(item.special),
            causal=causal,
            text=item.text,
        )
        for row, (item, n) in enumerate(zip(inputs, lengths.tolist()))
    ]


def attention(
    text: str, model: models.ModelLike = ENCODER, path: str | Path | None = None, max_tokens: int = MAX_TOKENS
) -> AttentionResult:
    """Every attention weight of ``model`` on ``text`` (a batch of one).

    Raises:
        TooManyTokens: the text is longer than ``max_tokens`` tokens.
        ModelUnavailable: the model cannot be loaded here.
    """
    return alone(attention_batch, prepare_attention(text, model, path, max_tokens))


# -- next token -----------------------------------------------------------------------------------


@dataclass
class NextToken:
    """The distribution over the next token, before and after temperature and top-p."""

    tokens: list[str]  # the top-k, most probable first (by the raw distribution)
    ids: list[int]
    raw: list[float]  # softmax of the logits (temperature 1)
    reshaped: list[float]  # after temperature and top-p, renormalised (0 outside the nucleus)
    in_nucleus: list[bool]
    greedy: str  # what greedy decoding picks
    nucleus_size: int  # how many tokens of the whole vocabulary stay inside top-p


def reshape(logits: np.ndarray, temperature: float, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities after temperature and nucleus (top-p) filtering, and the nucleus mask.

    Temperature 0 is greedy decoding (all mass on the top token); top-p 0 keeps only the top token.
    """
    if temperature < 0 or not 0 <= top_p <= 1:
        raise InputError("Temperature must be 0 or more and top-p between 0 and 1.")
    logits = logits.astype(np.float64)
    if temperature == 0:
        probs = np.zeros_like(logits)
        probs[int(logits.argmax())] = 1.0
    else:
        scaled = logits / temperature
        scaled -= scaled.max()
        probs = np.exp(scaled)
        probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order])
    # keep the smallest prefix whose mass reaches top_p (always at least one token)
    keep = int(np.searchsorted(cumulative, top_p, side="left")) + 1
    mask = np.zeros_like(probs, dtype=bool)
    mask[order[: max(1, min(keep, len(order)))]] = True
    filtered = np.where(mask, probs, 0.0)
    return filtered / filtered.sum(), mask


@dataclass(frozen=True)
class Prompt:
    """A prompt checked and tokenized for one decoder: the *prepare* step of the next-token view.

    Prompts with the same :attr:`batch_key` can share one forward pass (:func:`next_token_logits_batch`).
    """

    model: models.ModelRef
    ids: tuple[int, ...]

    @property
    def batch_key(self) -> tuple[str, str, str | None]:
        return ("next_token", self.model.id, self.model.path)


def prepare_prompt(
    prompt: str,
    model: models.ModelLike = DECODER,
    path: str | Path | None = None,
    max_tokens: int = PROMPT_TOKENS,
) -> Prompt:
    """Check ``prompt`` (not empty, a decoder, within ``max_tokens``) and tokenize it; no model runs.

    Raises:
        InputError: an empty prompt, or an encoder (no LM head).
        TooManyTokens: the prompt is longer than ``max_tokens`` tokens.
    """
    model = models.ref(model, path)
    if not prompt.strip():
        raise InputError("Type a prompt first: the model predicts the token that follows it.")
    _require_decoder(model)
    ids, _ = _encode(model, prompt, max_tokens)
    return Prompt(model, tuple(ids[0].tolist()))


@isolated
@forward("predicting the next token")
def next_token_logits_batch(prompts: list[Prompt]) -> list[np.ndarray]:
    """The LM head's logits for the token after each prompt (one ``(vocab,)`` float32 array each), in
    one forward pass. All prompts are for the same model (the same :attr:`Prompt.batch_key`).

    The prompts are padded on the right: in a causal model a position never sees the ones after it, so a
    prompt's last real token (whose logits are the prediction) reads exactly what it reads alone, at the
    same positions. Only those last positions go through the LM head (``logits_to_keep``).
    """
    import torch

    model = prompts[0].model
    lengths = torch.tensor([len(p.ids) for p in prompts])
    ids = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long)  # (B, T); 0 pads, never read
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt.ids)] = torch.tensor(prompt.ids)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()  # (B, T)
    with _lease(model, eager=False) as network:
        out = network(
            input_ids=ids.to(network.device),
            attention_mask=mask.to(network.device),
            logits_to_keep=(lengths - 1)[:, None].to(network.device),  # (B, 1): each prompt's last token
        )
        logits = out.logits[:, 0].float().cpu().numpy()  # (B, vocab)
    return list(logits)


def next_token_logits(
    prompt: str,
    model: models.ModelLike = DECODER,
    path: str | Path | None = None,
    max_tokens: int = PROMPT_TOKENS,
) -> np.ndarray:
    """The LM head's logits for the token after ``prompt`` (``(vocab,)``, float32): a batch of one."""
    return alone(next_token_logits_batch, prepare_prompt(prompt, model, path, max_tokens))


def distribution(
    logits: np.ndarray,
    model: models.ModelLike = DECODER,
    k: int = 10,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> NextToken:
    """Turn logits into the top-k view: raw probabilities, reshaped ones and the nucleus (no model call).

    ``model`` (an id, a folder or a reference) only decodes the token ids."""
    tokenizer = models.tokenizer(model)
    raw = _softmax(logits)
    reshaped, mask = reshape(logits, temperature, top_p)
    top = np.argsort(-raw, kind="stable")[:k]
    return NextToken(
        tokens=[tokenizer.decode([int(i)]) for i in top],
        ids=[int(i) for i in top],
        raw=[float(raw[i]) for i in top],
        reshaped=[float(reshaped[i]) for i in top],
        in_nucleus=[bool(mask[i]) for i in top],
        greedy=tokenizer.decode([int(raw.argmax())]),
        nucleus_size=int(mask.sum()),
    )


def next_token_distribution(
    prompt: str,
    model: models.ModelLike = DECODER,
    k: int = 10,
    temperature: float = 1.0,
    top_p: float = 1.0,
    path: str | Path | None = None,
) -> NextToken:
    """The LM head's distribution for the token after ``prompt``, reshaped by temperature and top-p."""
    model = models.ref(model, path)
    return distribution(next_token_logits(prompt, model), model, k, temperature, top_p)


def next_token(
    prompt: str,
    model: models.ModelLike = DECODER,
    k: int = 10,
    temperature: float = 1.0,
    top_p: float = 1.0,
    path: str | Path | None = None,
) -> list[tuple[str, float]]:
    """The ``k`` most probable next tokens after temperature and top-p, most probable first."""
    return ranked(next_token_distribution(prompt, model, k, temperature, top_p, path))


def ranked(result: NextToken) -> list[tuple[str, float]]:
    """The top-k tokens with their probabilities after temperature and top-p, most probable first."""
    pairs = sorted(zip(result.tokens, result.reshaped), key=lambda pair: -pair[1])
    return [(token, prob) for token, prob in pairs]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    exp = np.exp(shifted)
    return exp / exp.sum()


def _require_decoder(model: models.ModelRef) -> None:
    if not is_decoder(model):
        raise InputError(
            f"{model.id} is an encoder: it has no language-model head to predict a next token. "
            f"Pick a decoder such as {DECODER}."
        )


# -- logit lens -----------------------------------------------------------------------------------


def _layers_and_norm(network: Any) -> tuple[Any, Any, Any]:
    """The decoder blocks, the final norm and the LM head of a causal LM (Llama, Phi-3, GPT-2 …)."""
    body = getattr(network, "model", None) or getattr(network, "transformer", None)
    layers = getattr(body, "layers", None) or getattr(body, "h", None)
    norm = getattr(body, "norm", None) or getattr(body, "ln_f", None)
    if layers is None or norm is None:
        raise InputError(f"The logit lens does not know where the blocks of {type(network).__name__} are.")
    return layers, norm, network.get_output_embeddings()


@forward("running the logit lens")
def logit_lens(
    prompt: str,
    model: models.ModelLike = DECODER,
    k: int = 1,
    path: str | Path | None = None,
    max_tokens: int = LENS_TOKENS,
) -> list[list[list[tuple[str, float]]]]:
    """The LM head applied to every layer's output (after the final norm): ``[layer][position] -> top-k``.

    The last layer's row is the model's real prediction, so its last position equals :func:`next_token`.
    """
    model = models.ref(model, path)
    import torch

    if not prompt.strip():
        raise InputError("Type a prompt first.")
    _require_decoder(model)
    ids, _ = _encode(model, prompt, max_tokens)
    tokenizer = models.tokenizer(model)
    captured: list[Any] = []
    with _lease(model, eager=False) as network:
        layers, norm, head = _layers_and_norm(network)
        hooks = [
            layer.register_forward_hook(
                lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out)
            )
            for layer in layers
        ]
        try:
            with torch.no_grad():
                network(input_ids=ids.to(network.device))
                steps = len(captured)
                hidden = torch.cat([h[0] for h in captured])  # (layers * T, d): one matmul for all layers
                logits = head(norm(hidden)).float()  # (layers * T, vocab)
                # top-k probabilities without materialising the full softmax of every layer
                top, indices = logits.topk(k, dim=-1)
                values = (top - logits.logsumexp(-1, keepdim=True)).exp()
        finally:
            for hook in hooks:
                hook.remove()
        values = values.reshape(steps, ids.shape[1], k)  # (layers, T, k)
        indices = indices.reshape(steps, ids.shape[1], k)
    values, indices = values.cpu().numpy(), indices.cpu().numpy()
    decoded: dict[int, str] = {}

    def text(token_id: int) -> str:
        if token_id not in decoded:
            decoded[token_id] = tokenizer.decode([token_id])
        return decoded[token_id]

    return [
        [
            [(text(int(i)), float(p)) for i, p in zip(indices[layer, t], values[layer, t])]
            for t in range(indices.shape[1])
        ]
        for layer in range(indices.shape[0])
    ]


# -- structure ------------------------------------------------------------------------------------


@dataclass
class Structure:
    """What ``print(model)`` shows, with parameter counts, and the numbers a reader looks for."""

    tree: str
    parameters: int
    vocab_size: int
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _tree(module: Any, name: str, depth: int, max_depth: int, lines: list[str]) -> None:
    children = list(module.named_children())
    label = f"{'  ' * depth}({name}): " if depth else ""
    lines.append(f"{label}{type(module).__name__}  [{_count(module):,} parameters]")
    if depth >= max_depth:
        return
    seen: dict[str, int] = {}
    for child_name, child in children:
        # Repeated blocks (layers 0..N) print once with their count, as print(model) does.
        signature = f"{type(child).__name__}:{_count(child)}"
        if child_name.isdigit() and signature in seen:
            seen[signature] += 1
            continue
        seen[signature] = 1
        _tree(child, child_name, depth + 1, max_depth, lines)
    repeats = {sig: n for sig, n in seen.items() if n > 1}
    for sig, n in repeats.items():
        lines.append(f"{'  ' * (depth + 1)}… {n} × {sig.split(':')[0]} in all")


def structure(model: models.ModelLike = DECODER, path: str | Path | None = None) -> Structure:
    """The model's module tree with parameter counts, embedding shape, layers, heads and KV heads."""
    model = models.ref(model, path)
    with _lease(model, eager=False) as network:
        config = network.config
        lines: list[str] = []
        _tree(network, type(network).__name__, 0, 4, lines)
        embeddings = network.get_input_embeddings().weight
        heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 0)
        return Structure(
            tree="\n".join(lines),
            parameters=_count(network),
            vocab_size=int(embeddings.shape[0]),
            hidden_size=int(embeddings.shape[1]),
            layers=getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0),
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        )


# -- KV cache -------------------------------------------------------------------------------------


@dataclass
class Generation:
    text: str
    seconds: float
    tokens: int


@forward("generating text")
def generate_stream(
    prompt: str,
    model: models.ModelLike = DECODER,
    new_tokens: int = 50,
    use_cache: bool = True,
    path: str | Path | None = None,
) -> Iterator[tuple[str, Generation | None]]:
    """Greedy generation that yields the text so far, then a final :class:`Generation` with its time.

    Exactly ``new_tokens`` tokens are generated (end-of-text is ignored) so runs with and without the KV
    cache do the same work.
    """
    model = models.ref(model, path)
    _require_decoder(model)
    if not prompt.strip():
        raise InputError("Type a prompt first.")
    ids, _ = _encode(model, prompt, PROMPT_TOKENS)
    tokenizer = models.tokenizer(model)
    text = ""
    # The stream closes (its thread joined) before the lease ends, also when the reader stops early.
    with _lease(model, eager=False) as network:
        started = time.perf_counter()
        with TokenStream(
            network,
            tokenizer,
            name="attention",
            input_ids=ids.to(network.device),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=use_cache,
        ) as stream:
            for text in stream.texts():
                yield text, None
        seconds = time.perf_counter() - started
    yield text, Generation(text, seconds, new_tokens)


def continue_text(
    prompt: str, model: models.ModelLike = DECODER, new_tokens: int = 30, path: str | Path | None = None
) -> Iterator[str]:
    """Free generation: the greedy continuation of ``prompt``, growing token by token.

    When a serving engine serves the model (:mod:`lab.engine`), the prompt goes there as it is (a plain
    completion, no chat template, end-of-text ignored as in process); otherwise the model runs here
    (:func:`generate_stream`). Either way ``new_tokens`` tokens are generated and closing the iterator
    stops the generation. A model in a local folder (``path``) always runs here.
    """
    model = models.ref(model, path)
    new_tokens = validate.bound("new_tokens", new_tokens)
    if model.path is None and engine.serves(model.id):
        _require_decoder(model)
        if not prompt.strip():
            raise InputError("Type a prompt first.")
        _encode(model, prompt, PROMPT_TOKENS)  # the same cap as in process, checked before sending
        yield from engine.growing(engine.completion_stream(model.id, prompt, new_tokens, ignore_eos=True))
        return
    with engine.in_process_turn(), contextlib.closing(generate_stream(prompt, model, new_tokens)) as steps:
        for text, final in steps:
            if final is None:
                yield text


def kv_cache_timing(
    prompt: str, model: models.ModelLike = DECODER, new_tokens: int = 50, path: str | Path | None = None
) -> dict[str, float]:
    """Seconds to generate ``new_tokens`` with and without the KV cache, and their ratio (the book's test)."""
    model = models.ref(model, path)
    results = {}
    for use_cache in (True, False):
        *_, (_, final) = generate_stream(prompt, model, new_tokens, use_cache)
        results["with_cache_s" if use_cache else "without_cache_s"] = final.seconds
    results["ratio"] = results["without_cache_s"] / results["with_cache_s"]
    results["device"] = device.select().device  # type: ignore[assignment]
    return results
