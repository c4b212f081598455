"""Show the code: the short Python that reproduces a result of the lab, built from the inputs it used.

Every tab shows, beside each result, a snippet a reader can copy into a notebook to get the same numbers:
first with the lab's library (``from lab import ...``), then, where it is short, the way the book writes
it (transformers, sentence-transformers here; BERTopic, open_clip, BLIP-2's classes and peft in
:mod:`lab.book_code`). Each snippet starts with a stamp: the models with their source
and revision as the lab resolves them here (:mod:`lab.catalog`), the seed, and the package versions.

The builders are pure functions of the same inputs and settings the tab passed to the library: they
format code and read versions, and never load a model, so they cost a result a few microseconds and the
first page nothing. Their snippets leave the result in named variables (``result``, ``matrix``,
``run``…) that :mod:`tests.test_snippets` reads after running them in a fresh interpreter.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from lab import book_code, catalog, embeddings, models

# The distributions a snippet's stamp lists, by what the snippet imports.
BASE_PACKAGES = ("torch", "transformers")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(packages: Iterable[str]) -> str:
    """``python 3.11.9, torch 2.14.1, …`` for a stamp (the lab's own version first)."""
    listed = [f"python {platform.python_version()}", f"llm-lab {_version('llm-lab')}"]
    listed += [f"{name} {_version(name)}" for name in dict.fromkeys(packages)]
    return ", ".join(listed)


def model_source(model_id: str, part: catalog.Part = "model", path: str | Path | None = None) -> str:
    """Where ``model_id`` loads from here, with its revision where one is known.

    A Hugging Face cache gives the snapshot's commit; a packaged source its package version; a folder
    (``LAB_MODEL_DIR`` or a path) has no revision, so its path is the stamp.
    """
    try:
        source = models.source_of(model_id, part, path)
    except catalog.ModelUnavailable:
        return "not available on the machine that made this snippet"
    if source.origin == "hub-cache":
        return f"Hugging Face cache, revision {_snapshot(model_id, part) or 'unknown'}"
    if source.origin == "packaged":
        package = source.detail.removeprefix("packaged: ").split(" ")[0]
        return f"{source.detail}, version {_version(package)}"
    if source.origin == "hub":
        return "Hugging Face Hub, revision main (downloaded on first use)"
    return source.detail


def _snapshot(model_id: str, part: catalog.Part) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        model_id, "tokenizer_config.json" if part == "tokenizer" else "config.json"
    )
    return Path(found).parent.name if isinstance(found, str) else None


def stamp(
    title: str,
    model_ids: Sequence[tuple[str, catalog.Part, str | None]] = (),
    *,
    seed: int | None = None,
    packages: Iterable[str] = BASE_PACKAGES,
) -> str:
    """The comment lines a snippet starts with: what it reproduces, models, seed, versions."""
    lines = [f"# {title}, as LLM Lab showed it.", "# Runs where the lab is installed (pip install -e .)."]
    for model_id, part, path in model_ids:
        lines.append(f"# {part}: {model_id} · {model_source(model_id, part, path)}")
    if seed is not None:
        lines.append(f"# seed: {seed}")
    lines.append(f"# versions: {versions(packages)}")
    return "\n".join(lines)


def _join(*blocks: str) -> str:
    return "\n\n".join(block.strip("\n") for block in blocks if block) + "\n"


def _path_arg(path: str | Path | None) -> str:
    return f", path={str(path)!r}" if path else ""


# -- chapter 2: tokenizers -------------------------------------------------------------------------------


def tokenizers(text: str, names: Sequence[str], max_chars: int) -> str:
    """The tokenizer comparison: every tokenizer's tokens of ``text`` (``results[name].tokens``)."""
    names = list(names)
    lab = f"""
from lab import tokens

TEXT = {text!r}
results = {{t.name: t for t in tokens.compare(TEXT, {names!r}, max_chars={max_chars})}}
for name, t in results.items():
    print(name, t.error or f"{{len(t.ids)}} tokens: {{t.tokens}}")
"""
    book = ""
    first = next((n for n in names if _is_transformers_tokenizer(n)), None)
    if first is not None:
        book = f"""
# The book's way (chapter 2), for {first}: each id decoded on its own.
from transformers import AutoTokenizer
from lab import models

tokenizer = AutoTokenizer.from_pretrained(models.locate({first!r}, "tokenizer"))
token_ids = tokenizer(TEXT).input_ids
book_tokens = [tokenizer.decode(token_id) for token_id in token_ids]
print(book_tokens)
"""
    stamped = [(name, "tokenizer", None) for name in names]
    return _join(stamp("Tokenizer comparison", stamped), lab, book)


def boundaries(text: str, a: str, b: str) -> str:
    """Where two tokenizers cut the same text (``result``: character offsets where a token starts)."""
    lab = f"""
from lab import tokens

TEXT = {text!r}
first, second = tokens.tokenize(TEXT, {a!r}), tokens.tokenize(TEXT, {b!r})
result = tokens.boundaries(first, second)  # offsets where a token starts: in both, only in one
print("both cut at:", result.both)
print("only in", {a!r}, result.only_a)
print("only in", {b!r}, result.only_b)
"""
    return _join(stamp("Token boundaries", [(a, "tokenizer", None), (b, "tokenizer", None)]), lab)


def chat_template(names: Sequence[str], messages: Sequence[Mapping[str, str]]) -> str:
    """A conversation through each tokenizer's chat template (``renderings[name].text`` and its tokens)."""
    names = list(names)
    lab = f"""
from lab import tokens

MESSAGES = {[dict(m) for m in messages]!r}
renderings = {{name: tokens.render_chat(name, MESSAGES) for name in {names!r}}}
for name, rendering in renderings.items():
    print(f"{{name}}: {{len(rendering.ids)}} tokens")
    print(rendering.text)
"""
    book = ""
    if names:
        book = f"""
# The book's way (chapter 6): the tokenizer applies its own template.
from transformers import AutoTokenizer
from lab import models

tokenizer = AutoTokenizer.from_pretrained(models.locate({names[0]!r}, "tokenizer"))
book_text = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
"""
    stamped = [(name, "tokenizer", None) for name in names]
    return _join(stamp("Chat template", stamped), lab, book)


def _is_transformers_tokenizer(name: str) -> bool:
    """Whether ``AutoTokenizer`` can open ``name`` here (tiktoken encodings and missing ones cannot)."""
    try:
        return not models.locate(name, "tokenizer").startswith("tiktoken:")
    except catalog.ModelUnavailable:
        return False


# -- chapters 2-3: attention, the forward pass, embeddings -----------------------------------------------


def attention(text: str, model: str) -> str:
    """Every attention weight of ``model`` on ``text`` (``result.weights``: layers, heads, T, T)."""
    lab = f"""
from lab import attention

TEXT, MODEL = {text!r}, {model!r}
result = attention.attention(TEXT, MODEL)
print(result.tokens)
print(result.weights.shape)  # (layers, heads, tokens, tokens)
"""
    book = """
# With transformers directly: eager attention returns the weights (SDPA returns none).
import torch
from transformers import AutoModel, AutoTokenizer
from lab import models

tokenizer = AutoTokenizer.from_pretrained(models.locate(MODEL, "tokenizer"))
network = AutoModel.from_pretrained(models.locate(MODEL), attn_implementation="eager")
with torch.no_grad():
    output = network(**tokenizer(TEXT, return_tensors="pt"), output_attentions=True)
attentions = torch.stack([layer[0] for layer in output.attentions])  # (layers, heads, T, T)
print(attentions.shape)
"""
    return _join(stamp("Attention weights", [(model, "model", None)]), lab, book)


def next_token(prompt: str, model: str, k: int, temperature: float, top_p: float) -> str:
    """The next-token distribution: top ``k`` after temperature and top-p (``result``)."""
    lab = f"""
from lab import attention

PROMPT, MODEL = {prompt!r}, {model!r}
logits = attention.next_token_logits(PROMPT, MODEL)  # (vocabulary,)
result = attention.distribution(logits, MODEL, k={k}, temperature={temperature}, top_p={top_p})
for token, p, reshaped in zip(result.tokens, result.raw, result.reshaped):
    print(f"{{token!r:>16}}  p={{p:.3f}}  after temperature and top-p: {{reshaped:.3f}}")
"""
    book = """
# The book's way (chapter 3): the LM head's scores for the last position, softmaxed.
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from lab import models

tokenizer = AutoTokenizer.from_pretrained(models.locate(MODEL, "tokenizer"))
network = AutoModelForCausalLM.from_pretrained(models.locate(MODEL))
input_ids = tokenizer(PROMPT, return_tensors="pt").input_ids
with torch.no_grad():
    lm_head_output = network(input_ids).logits
probabilities = lm_head_output[0, -1].double().softmax(-1)
token_id = int(probabilities.argmax())
top_token, top_probability = tokenizer.decode(token_id), float(probabilities[token_id])
print(repr(top_token), round(top_probability, 3))
"""
    return _join(stamp("Next-token distribution", [(model, "model", None)]), lab, book)


def logit_lens(prompt: str, model: str, k: int = 1) -> str:
    """The logit lens: the LM head on every layer's output (``rows[layer][position]``)."""
    lab = f"""
from lab import attention

PROMPT, MODEL = {prompt!r}, {model!r}
rows = attention.logit_lens(PROMPT, MODEL, k={k})  # [layer][position] -> [(token, probability)]
for layer, row in enumerate(rows):
    print(layer, [cell[0][0] for cell in row])
"""
    return _join(stamp("Logit lens", [(model, "model", None)]), lab)


def structure(model: str) -> str:
    """The model's module tree with parameter counts, and the numbers a reader looks for (``structure``)."""
    lab = f"""
from lab import attention

MODEL = {model!r}
structure = attention.structure(MODEL)
print(structure.tree)  # print(model), four levels deep, with parameter counts
print(f"{{structure.parameters:,}} parameters, {{structure.layers}} layers, {{structure.heads}} heads")
"""
    book = """
# The book's way (chapter 3): print the model.
from transformers import AutoModelForCausalLM
from lab import models

print(AutoModelForCausalLM.from_pretrained(models.locate(MODEL)))
"""
    return _join(stamp("Model structure", [(model, "model", None)]), lab, book)


def similarity(sentences: Sequence[str], model: str) -> str:
    """Sentence similarity: the cosine of every pair of sentence embeddings (``matrix``)."""
    lab = f"""
from lab import embeddings

SENTENCES, MODEL = {list(sentences)!r}, {model!r}
matrix = embeddings.similarity(SENTENCES, MODEL)  # (sentences, sentences) cosines
print(matrix.round(3))
"""
    book = """
# The book's way (chapter 4): sentence-transformers.
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import cos_sim
from lab import models

encoder = SentenceTransformer(models.locate(MODEL))
vectors = encoder.encode(SENTENCES)
book_matrix = cos_sim(vectors, vectors).numpy()
"""
    packages = (*BASE_PACKAGES, "sentence-transformers")
    return _join(stamp("Sentence similarity", [(model, "model", None)], packages=packages), lab, book)


def embedding_map(texts: Sequence[str], model: str, method: str, *, sentences: bool = False) -> str:
    """A map of embeddings: static token vectors, or sentence vectors, projected to 2-D (``points``)."""
    if sentences:
        load = f"""
TEXTS, MODEL = {list(texts)!r}, {model!r}
labels, vectors = TEXTS, embeddings.embed(TEXTS, MODEL)  # (sentences, dim) sentence embeddings
"""
    else:
        load = f"""
WORDS, MODEL = {list(texts)!r}, {model!r}
labels, vectors = embeddings.token_vectors(WORDS, MODEL)  # (words, dim) static input embeddings
"""
    umap = method == "umap"
    seeded = "UMAP with random_state=embeddings.MAP_SEED" if umap else "PCA, exact"
    lab = f"""
from lab import embeddings
{load}
points = embeddings.project(vectors, {method!r})  # (n, 2): {seeded}
for label, (x, y) in zip(labels, points):
    print(f"{{x:8.3f}} {{y:8.3f}}  {{label}}")
"""
    packages = (
        *BASE_PACKAGES,
        *(["sentence-transformers"] if sentences else []),
        *(["umap-learn"] if umap else []),
    )
    title = "Map of sentence embeddings" if sentences else "Map of static token embeddings"
    seed = embeddings.MAP_SEED if umap else None
    return _join(stamp(title, [(model, "model", None)], seed=seed, packages=packages), lab)


def neighbours(token: str, model: str, k: int = 10) -> str:
    """A token's nearest neighbours among the model's input embeddings (``neighbours``: token, cosine)."""
    lab = f"""
from lab import embeddings

TOKEN, MODEL = {token!r}, {model!r}
neighbours = embeddings.neighbours(TOKEN, MODEL, k={k})  # [(token, cosine)], closest first
for token, cosine in neighbours:
    print(f"{{cosine:.3f}}  {{token!r}}")
"""
    return _join(stamp("Embedding neighbours", [(model, "model", None)]), lab)


def static_vs_contextual(word: str, sentences: Sequence[str], model: str) -> str:
    """One word's static and contextual vectors across sentences, compared (``result``)."""
    lab = f"""
from lab import embeddings

WORD, SENTENCES, MODEL = {word!r}, {list(sentences)!r}, {model!r}
result = embeddings.compare_word(WORD, SENTENCES, MODEL)
print(result.static.round(3))  # static (input) cosines: one vector whatever the sentence, all 1
print(result.contextual.round(3))  # contextual (output) cosines: the sentence changes the vector
print("the word's tokens in each sentence:", result.pieces)
"""
    return _join(stamp("Static versus contextual embeddings", [(model, "model", None)]), lab)


# -- chapter 5: topics -----------------------------------------------------------------------------------


def topics(
    corpus: str,
    settings: Any,
    *,
    file: str | None = None,
    columns: Mapping[str, str | None] | None = None,
    embedding_model: str | None = None,
    fitted: Mapping[str, Any] | None = None,
    shipped_embeddings: bool = False,
) -> str:
    """A topic fit: the corpus as chosen and every setting that differs from the book's (``run``), then
    the same pipeline in BERTopic's own terms (``book_topics``).

    ``settings`` is the :class:`lab.topics.TopicSettings` the tab fitted with; ``fitted`` the run's
    ``params`` and ``shipped_embeddings`` whether it used the corpus's own embeddings
    (:func:`lab.topics.shipped_embeddings`), for the BERTopic version.
    """
    if file:
        chosen = {name: value for name, value in (columns or {}).items() if value}
        options = "".join(f", {name}={value!r}" for name, value in chosen.items())
        load = f"corpus = topics.load_choice({corpus!r}, {str(file)!r}{options})  # the file you uploaded"
    else:
        load = f"corpus = topics.load_corpus({corpus!r})"
    defaults = type(settings)()
    changed = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if getattr(settings, f.name) != getattr(defaults, f.name) or f.name == "seed"
    }
    arguments = "".join(f"\n    {name}={value!r}," for name, value in changed.items())
    lab = f"""
from lab import topics

{load}
settings = topics.TopicSettings({arguments}
)
run = topics.fit_corpus(corpus, settings)
print(run.n_topics, "topics,", f"{{run.outlier_share:.0%}} outliers")
print(run.info[["Topic", "Count", "Name"]].head(10))
"""
    model = embedding_model or settings.model_id
    packages = (*BASE_PACKAGES, "sentence-transformers", "bertopic", "umap-learn", "hdbscan", "scikit-learn")
    header = stamp("Topic model", [(model, "model", None)], seed=settings.seed, packages=packages)
    book = book_code.topics(settings, model, fitted=fitted, shipped=shipped_embeddings)
    return _join(header, lab, book)


# -- chapter 9: CLIP and BLIP-2 --------------------------------------------------------------------------

CLIP_PACKAGES = ("torch", "open_clip_torch", "pillow")


def clip_search(model: str, query: str, k: int, *, by: str = "text", own_images: int = 0) -> str:
    """A CLIP search over the default gallery, by text or by an image (``hits``: ``[(image, cosine)]``)."""
    search = "search_text" if by == "text" else "search_image"
    note = (
        f"\n# The page also searched {own_images} image(s) of your own: add them with "
        "index = index.extend({'name': 'path', ...})."
        if own_images
        else ""
    )
    lab = f"""
from lab import clip

MODEL, QUERY = {model!r}, {query!r}
model = clip.load(MODEL)
index = clip.ImageIndex.build(clip.default_gallery(), model){note}
hits = index.{search}(QUERY, k={k})
for name, cosine in hits:
    print(f"{{cosine:.3f}}  {{name}}")
"""
    book = book_code.clip_search(model, k, by=by, own_images=own_images)
    return _join(stamp("CLIP search", [(model, "model", None)], packages=CLIP_PACKAGES), lab, book)


def zero_shot(model: str, image: str, labels: Sequence[str], template: str) -> str:
    """CLIP zero-shot classification of one image (``result.probabilities``, one per label)."""
    lab = f"""
from lab import clip

MODEL = {model!r}
IMAGE = {str(image)!r}  # the image the page classified: put your copy's path here
LABELS, TEMPLATE = {list(labels)!r}, {template!r}
model = clip.load(MODEL)
result = clip.classify(IMAGE, LABELS, model, TEMPLATE)
for label, cosine, p in zip(result.labels, result.cosines, result.probabilities):
    print(f"{{label:>20}}  cosine {{cosine:.3f}}  p={{p:.3f}}")
"""
    book = book_code.zero_shot(model)
    return _join(stamp("CLIP zero-shot", [(model, "model", None)], packages=CLIP_PACKAGES), lab, book)


def clip_matrix(
    model: str, image_ids: Sequence[str], captions: Sequence[str], own: Mapping[str, str] | None = None
) -> str:
    """The book's images × captions cosine matrix (``matrix``); ``own``: the reader's uploads among the
    images, id → path (the others are in the lab's default gallery)."""
    own = dict(own or {})
    listed = [i for i in image_ids if i not in own]
    mine = [(i, own[i]) for i in image_ids if i in own]
    extra = (
        f"IMAGES += {mine!r}  # your own images: put your copies' paths here (rows follow this list)\n"
        if mine
        else ""
    )
    lab = f"""
from lab import clip

MODEL = {model!r}
CAPTIONS = {list(captions)!r}
gallery = clip.gallery_paths(None)  # the lab's default gallery: image id -> file
IMAGES = [(name, gallery[name]) for name in {listed!r}]
{extra}model = clip.load(MODEL)
matrix = clip.similarity_matrix(IMAGES, CAPTIONS, model)  # (images, captions) cosines
print(matrix.round(3))
"""
    return _join(stamp("CLIP similarity matrix", [(model, "model", None)], packages=CLIP_PACKAGES), lab)


def vision_chat(
    model: str,
    image: str,
    *,
    folder: str | None = None,
    precision: str = "auto",
    history: Sequence[Sequence[str]] = (),
    question: str | None = None,
    decoding: Mapping[str, Any] | None = None,
) -> str:
    """A BLIP-2 caption (``question`` None: ``caption``) or a chat answer (``answer``), then the same with
    transformers' BLIP-2 classes (``book_caption``, ``book_answer``). A sampled answer's ``decoding`` holds
    the seed it was drawn with: the snippet is stamped with it and passes it on."""
    head = f"""
from lab import vision_chat

MODEL = {model!r}
IMAGE = {str(image)!r}  # the image of the page: put your copy's path here
"""
    from lab.vision_chat import CAPTION_TOKENS, Decoding

    options = f"{_path_arg(folder)}, quantization={precision!r}"
    if question is None:
        call = f"caption = vision_chat.caption(IMAGE, MODEL{options})\nprint(caption)"
        choice = Decoding(max_new_tokens=CAPTION_TOKENS)
    else:
        turns = [list(turn) for turn in history]
        choice = Decoding(**(decoding or {}))
        extra = "".join(f", {name}={value!r}" for name, value in (decoding or {}).items())
        call = (
            f"HISTORY = {turns!r}  # earlier (question, answer) turns\n"
            f"QUESTION = {question!r}\n"
            f"answer = vision_chat.answer(IMAGE, HISTORY, QUESTION, MODEL{options}{extra})\nprint(answer)"
        )
    seed = choice.seed if choice.samples else None
    book = book_code.vision_chat(
        model,
        folder=folder,
        precision=precision,
        question=question,
        generate=choice.generate_kwargs(),
        seed=seed,
    )
    title = "BLIP-2 caption" if question is None else "BLIP-2 chat answer"
    return _join(stamp(title, [(model, "model", folder)], seed=seed), head, call, book)


# -- chapter 12: fine-tuning -----------------------------------------------------------------------------

FINETUNE_PACKAGES = ("torch", "transformers", "peft", "accelerate")


def _finetune_config(config: Mapping[str, Any]) -> str:
    """``config = finetune.FineTuneConfig.from_dict({...})`` with every setting but the output folder."""
    values = {name: value for name, value in config.items() if name != "output_dir"}
    arguments = "".join(f"\n    {name!r}: {value!r}," for name, value in values.items())
    return f"config = finetune.FineTuneConfig.from_dict({{{arguments}\n}})"


def finetune_run(config: Mapping[str, Any], method: str | None = None) -> str:
    """A fine-tuning run with the settings it ran with (``result.losses``: the training loss curve), then
    peft's LoRA with the training loop written out (``book_losses``); ``method`` is what ran."""
    lab = f"""
from lab import finetune

{_finetune_config(config)}
result = finetune.start(config).wait()  # trains in its own process; a script needs no main guard
print(result.status, result.method)
print("loss by step:", [round(loss, 4) for _, loss in result.losses])
print("adapter:", result.adapter_dir)
"""
    model = str(config.get("base_model"))
    header = stamp(
        "Fine-tuning run", [(model, "model", None)], seed=config.get("seed"), packages=FINETUNE_PACKAGES
    )
    return _join(header, lab, book_code.finetune_run(config, method))


def finetune_preview(config: Mapping[str, Any]) -> str:
    """The check before a run: its plan, and the first chats as the model reads them (``preview``)."""
    lab = f"""
from lab import finetune

{_finetune_config(config)}
plan = finetune.plan(config)  # checks the settings against the model and data, estimates; loads no weights
preview = finetune.preview(config, 3)  # the first chats through the chat template, token by token
print(plan.summary())
for example in preview.examples:
    counted = sum(role == "loss" for _, role in example.pieces)
    print(f"{{example.tokens}} tokens, {{counted}} count for the loss:", example.text)
"""
    header = stamp(
        "Fine-tuning data preview and plan",
        [(str(config.get("base_model")), "model", None)],
        seed=config.get("seed"),
        packages=FINETUNE_PACKAGES,
    )
    return _join(header, lab)


def finetune_compare(prompt: str, base_model: str | None, adapter: str, max_new_tokens: int) -> str:
    """Base against fine-tuned answers to one prompt, greedy (``base``, ``tuned``), then with transformers
    and peft (``book_base``, ``book_tuned``)."""
    lab = f"""
from lab import finetune

ADAPTER = {str(adapter)!r}  # the run's adapter folder (in the run's zip)
PROMPT = {prompt!r}
base, tuned = finetune.generate_pair(PROMPT, {base_model!r}, ADAPTER, max_new_tokens={max_new_tokens})
print("base:", base)
print("fine-tuned:", tuned)
"""
    stamped = [(base_model, "model", None)] if base_model else []
    book = book_code.finetune_compare(str(adapter), base_model, max_new_tokens)
    return _join(stamp("Base and fine-tuned answers", stamped, packages=FINETUNE_PACKAGES), lab, book)


STABILITY_CALLS = {
    "sweep": "topics.sweep_min_cluster_size(run, corpus.labels)  # one HDBSCAN per value, cached UMAP",
    "seeds": "topics.seed_agreement(run)  # UMAP and HDBSCAN again for seeds 7 and 2024; ARI between runs",
    "outliers": "topics.compare_outlier_strategies(run, corpus.labels)  # BERTopic's reduce_outliers",
}


def _after_fit(fit_code: str, code: str) -> str:
    """What a tab shows of a fitted run: the lab's part of the fit's snippet (:func:`topics`; its BERTopic
    version would only fit the same topics again), then the lines that ask."""
    lab_fit = fit_code.split(book_code.TOPICS_TITLE)[0]
    return f"{lab_fit.rstrip()}\n\n{code.strip()}\n"


def topic_stability(fit_code: str, measure: str) -> str:
    """A stability measurement (``sweep``, ``seeds``, ``outliers``) after the topic fit's own snippet."""
    return _after_fit(fit_code, f"result = {STABILITY_CALLS[measure]}\nprint(result)")


def topic_words(fit_code: str, topic: int) -> str:
    """One topic's words and their c-TF-IDF weights, and their bar chart (``words``, ``figure``)."""
    return _after_fit(
        fit_code,
        f"""
words = topics.topic_words(run, {topic})  # get_topic({topic}): [(word, c-TF-IDF weight)]
figure = topics.word_bars(words, run.topic_name({topic}))  # plotly: figure.show() in a notebook
print(words)
""",
    )


def topic_search(fit_code: str, query: str, top_n: int = 5) -> str:
    """``find_topics``: the topics closest to a query (``found``: topic, similarity, name)."""
    return _after_fit(
        fit_code,
        f"""
found = topics.search(run, {query!r}, {top_n})  # find_topics: [(topic, similarity, name)]
for topic, similarity, name in found:
    print(f"{{similarity:.3f}}  {{topic}}  {{name}}")
""",
    )


def topic_representations(fit_code: str, **options: Any) -> str:
    """The representation comparison with the options the tab used (``table``); the book's prompt is named,
    not copied."""
    from lab.topics.representations import BOOK_PROMPT

    arguments = "".join(
        f"\n    {name}=topics.BOOK_PROMPT,"
        if name == "prompt" and value == BOOK_PROMPT
        else f"\n    {name}={value!r},"
        for name, value in options.items()
    )
    return _after_fit(
        fit_code,
        f"""
table = topics.compare_representations(  # c-TF-IDF words next to what each representation makes of them
    run,{arguments}
)
print(table.to_string())
""",
    )


TOPIC_MAPS = {
    "documents": "topics.documents_map(run, hide_annotations={hide})  # plotly: figure.show() in a notebook",
    "datamap": "topics.datamap_static(run)  # matplotlib, by datamapplot: figure.savefig('datamap.png')",
}


def topic_map(fit_code: str, kind: str, *, hide_annotations: bool = True) -> str:
    """A map of the fitted documents (``documents``: BERTopic's documents map; ``datamap``: datamapplot's
    static figure) after the topic fit's own snippet; ``points`` holds the 2-D coordinates it draws."""
    call = TOPIC_MAPS[kind].format(hide=hide_annotations)
    return _after_fit(
        fit_code, f"points = run.layout()  # (documents, 2): UMAP to 2-D, seeded as the fit\nfigure = {call}"
    )
