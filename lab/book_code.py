"""The book's way: the code of chapters 5, 9 and 12 written with the libraries the book uses.

:mod:`lab.snippets` shows each result first as a call of the lab's library, then, where it is short, the
way the book writes it. The blocks of this module are that second part for topics (BERTopic with its
models spelled out), CLIP (open_clip), BLIP-2 (transformers' processor and model) and fine-tuning (peft).
Each block follows the lab's block in one script and reuses its variables (``corpus``, ``QUERY``,
``IMAGE``, ``config``…); it spells out every setting the lab used, so that it gives the lab's numbers, and
where a setting has no short equivalent a comment says so. Pictures are opened as the lab opens them
(upright, 8-bit RGB, transparency on white) and models are placed as the lab places them
(:func:`lab.device.select`): anything else would change the numbers. Like :mod:`lab.snippets`, nothing
here loads a model; only small config files are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab import catalog, models

PLACE = "where = device.select()  # the lab's device and precision: a GPU in 16-bit, else the CPU in float32"


def _arguments(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in values.items())


# -- chapter 5: topics -----------------------------------------------------------------------------------


TOPICS_TITLE = "# The book's way (chapter 5): BERTopic with each model of the pipeline spelled out."


def topics(
    settings: Any, model: str, *, fitted: Mapping[str, Any] | None = None, shipped: bool = False
) -> str:
    """BERTopic with the pipeline's models spelled out, as chapter 5 builds it (``book_topics``).

    Args:
        settings: the :class:`lab.topics.TopicSettings` the tab fitted with.
        model: the embedding model used.
        fitted: the run's ``params`` (the settings as fitted: ``n_neighbors`` may have been lowered).
        shipped: the corpus came with this model's embeddings and the lab fitted with them.
    """
    umap = dict((fitted or {}).get("umap") or settings.umap)
    hdbscan = {k: v for k, v in ((fitted or {}).get("hdbscan") or settings.hdbscan).items() if v is not None}
    seed = settings.seed
    if settings.reduction == "pca":  # the lab's fast stand-ins, as BERTopic's own tests use them
        imports = ["from sklearn.decomposition import PCA"]
        reducer = f"PCA(n_components={umap['n_components']}, random_state={seed})"
    else:
        imports = ["from umap import UMAP"]
        reducer = f"UMAP({_arguments(umap)}, random_state={seed})"
    if settings.clustering == "kmeans":
        imports.append("from sklearn.cluster import KMeans")
        clusterer = f"KMeans(n_clusters={settings.n_clusters}, random_state={seed}, n_init='auto')"
    else:
        imports.append("from hdbscan import HDBSCAN")
        clusterer = f"HDBSCAN({_arguments(hdbscan)}, prediction_data=True)"
    embed = (
        "embeddings = corpus.embeddings  # shipped with the corpus, by this model: the lab fits with them"
        if shipped
        else "embeddings = embedding_model.encode(docs, show_progress_bar=False)"
    )
    stop_words = '(stop_words="english")' if settings.stop_words else "()"
    merge = f"\n    nr_topics={settings.nr_topics!r}," if settings.nr_topics is not None else ""
    outliers = ""
    if settings.outliers:
        given = ", embeddings=embeddings" if settings.outliers == "embeddings" else ""
        outliers = f"""
if -1 in topic_model.topics_:  # the outliers, reassigned to topics
    new_topics = topic_model.reduce_outliers(docs, topic_model.topics_, strategy={settings.outliers!r}{given})
    topic_model.update_topics(docs, topics=new_topics, vectorizer_model=vectorizer_model)
    # The lab then sets each topic's vector to its documents' centroid, for searching topics (find_topics):
    # BERTopic has no public call for that; the topics and their words are these.
"""
    return f"""
{TOPICS_TITLE}
from bertopic import BERTopic
from sentence_transformers import SentenceTransformer
from sklearn.feature_extraction.text import CountVectorizer
{chr(10).join(imports)}
from lab import device, models

{PLACE}
docs = corpus.docs  # the documents as the lab read them (empty and repeated ones dropped)
embedding_model = SentenceTransformer(models.locate({model!r}), device=where.device).to(where.dtype)
{embed}
umap_model = {reducer}
hdbscan_model = {clusterer}
vectorizer_model = CountVectorizer{stop_words}
topic_model = BERTopic(
    embedding_model=embedding_model,
    umap_model=umap_model,
    hdbscan_model=hdbscan_model,
    vectorizer_model=vectorizer_model,{merge}
).fit(docs, embeddings)
{outliers}
book_topics = topic_model.topics_
print(topic_model.get_topic_info()[["Topic", "Count", "Name"]].head(10))
"""


# -- chapter 9: CLIP (open_clip) and BLIP-2 (transformers) -----------------------------------------------


def _open_clip(model: str) -> str | None:
    """The lines that load ``model`` with open_clip as the lab does, or None where that is not short.

    Raises:
        ModelUnavailable: the weights are not here.
    """
    from lab.clip.model import parse_name

    arguments = models.open_clip_arguments(*parse_name(model))
    if arguments is None:
        return None
    model_name = arguments.pop("model_name")
    extra = "".join(f", {key}={value!r}" for key, value in arguments.items())
    return f"""
import open_clip
import torch
from lab import clip, device

{PLACE}
model, _, preprocess = open_clip.create_model_and_transforms({model_name!r}{extra})
tokenizer = open_clip.get_tokenizer({model_name!r})
model = model.eval().to(where.device, where.dtype)
"""


NOT_OPEN_CLIP = """
# This CLIP is a transformers checkpoint, which the lab converts to open_clip as it loads it: there is no
# short open_clip code for it, and the lab's code above is the way to these numbers.
"""

NORMALISE = """image_features /= image_features.norm(dim=-1, keepdim=True)
{other} /= {other}.norm(dim=-1, keepdim=True)"""


def clip_search(model: str, k: int, *, by: str = "text", own_images: int = 0) -> str:
    """A CLIP search with open_clip, as its README writes it (``book_hits``: ``[(image, cosine)]``)."""
    try:
        load = _open_clip(model)
    except catalog.ModelUnavailable:  # not on this machine: the lab's part says how to get it
        return ""
    if load is None:
        return NOT_OPEN_CLIP
    if by == "text":
        query = "query_features = model.encode_text(tokenizer([QUERY]).to(where.device)).float()"
    else:
        query = (
            "query_pixels = preprocess(clip.prepare_image(QUERY).image).unsqueeze(0)\n"
            "    query_features = model.encode_image(query_pixels.to(where.device, where.dtype)).float()"
        )
    own = (
        f"\n# The page also searched {own_images} image(s) of your own: gallery += [('name', 'path'), ...]"
        if own_images
        else ""
    )
    return f"""
# With open_clip directly (as its README, chapter 9's CLIP): the same weights, embedded and compared here.
{load.strip()}
gallery = clip.default_gallery()  # [(name, path)]: the book's images and the lab's photos{own}
with torch.no_grad():  # each picture opened as the lab opens it: upright, 8-bit RGB, at most 1,024 pixels
    pixels = torch.stack([preprocess(clip.prepare_image(path).image) for _, path in gallery])
    image_features = model.encode_image(pixels.to(where.device, where.dtype)).float()
    {query}
{NORMALISE.format(other="query_features")}
cosines = (image_features @ query_features.T)[:, 0]  # (images,)
book_hits = [(gallery[i][0], float(cosines[i])) for i in cosines.argsort(descending=True)[:{k}]]
"""


def zero_shot(model: str) -> str:
    """CLIP zero-shot with open_clip (``book_probabilities``, one per label, in the order of ``LABELS``)."""
    try:
        load = _open_clip(model)
    except catalog.ModelUnavailable:  # not on this machine: the lab's part says how to get it
        return ""
    if load is None:
        return NOT_OPEN_CLIP
    return f"""
# With open_clip directly (as its README): every label in the template, softmax over scaled cosines.
{load.strip()}
with torch.no_grad():  # the picture opened as the lab opens it: upright, 8-bit RGB, at most 1,024 pixels
    image = preprocess(clip.prepare_image(IMAGE).image).unsqueeze(0)
    image_features = model.encode_image(image.to(where.device, where.dtype)).float()
    texts = tokenizer([TEMPLATE.replace("{{}}", label) for label in LABELS])
    text_features = model.encode_text(texts.to(where.device)).float()
    logit_scale = model.logit_scale.exp().float().clamp(max=100)  # a trained CLIP's: the README's 100.0
{NORMALISE.format(other="text_features")}
book_cosines = (image_features @ text_features.T)[0]  # (labels,)
book_probabilities = (logit_scale * book_cosines).softmax(dim=-1)
"""


QUANTIZED = {  # what the page's precision choice adds to the book's loading (bitsandbytes, on a GPU)
    "8-bit": "# The page loaded it in 8-bit: add quantization_config=BitsAndBytesConfig(load_in_8bit=True).",
    "4-bit": "# The page loaded it in 4-bit NF4: add lab.models.vision_chat_model's BitsAndBytesConfig.",
    "auto": "# (auto: on a GPU short of memory the lab loads it in 8- or 4-bit; the page said so.)",
}


def vision_chat(
    model: str,
    *,
    folder: str | None = None,
    precision: str = "auto",
    question: str | None = None,
    generate: Mapping[str, Any],
    seed: int | None = None,
) -> str:
    """BLIP-2 with transformers' classes, as chapter 9 writes it: the caption (``question`` None:
    ``book_caption``) or the chat answer to the book's memory prompt (``book_answer``)."""
    path = f", path={str(folder)!r}" if folder else ""
    settings = _arguments(generate)
    quantized = QUANTIZED.get(precision, "")
    if question is None:
        ask = f"""
inputs = blip_processor(images=image, return_tensors="pt").to(where.device, where.dtype)
generated_ids = model.generate(**inputs, {settings})
book_caption = blip_processor.batch_decode(generated_ids, skip_special_tokens=True)[0].strip()
print(book_caption)
"""
    else:
        draw = (
            f"torch.manual_seed({seed})  # the same seed draws the same answer\n" if seed is not None else ""
        )
        ask = f"""
# The book's memory: every earlier turn written into the prompt (the lab leaves out the oldest turns
# when the prompt would not fit the model's context).
turns = [f"Question: {{q}} Answer: {{a}}." for q, a in HISTORY]
prompt = " ".join([*turns, f"Question: {{QUESTION}} Answer:"])
inputs = blip_processor(images=image, text=prompt, return_tensors="pt").to(where.device, where.dtype)
{draw}generated_ids = model.generate(**inputs, {settings})
if model.config.use_decoder_only_language_model:  # OPT's output repeats the prompt; Flan-T5's does not
    generated_ids = generated_ids[:, inputs["input_ids"].shape[1] :]
book_answer = blip_processor.batch_decode(generated_ids, skip_special_tokens=True)[0].strip()
print(book_answer)
"""
    return f"""
# The book's way (chapter 9): transformers' Blip2Processor and Blip2ForConditionalGeneration.
import torch
from transformers import Blip2ForConditionalGeneration, Blip2Processor
from lab import device, models, vision_chat

{PLACE}
location = models.locate(MODEL{path})
blip_processor = Blip2Processor.from_pretrained(location)
model = Blip2ForConditionalGeneration.from_pretrained(location, dtype=where.dtype).to(where.device)
{quantized}
image = vision_chat.open_for_model(IMAGE).image  # as the lab opens it: upright, RGB, transparency on white
{ask.strip()}
"""


# -- chapter 12: fine-tuning (peft) ----------------------------------------------------------------------


def finetune_run(config: Mapping[str, Any], method: str | None = None) -> str:
    """LoRA with peft and the lab's training loop written out: the run's loss curve (``book_losses``).

    ``method`` is what ran (``result.method``): QLoRA adds the book's 4-bit loading, a GPU autocast.
    """
    quantized = method == "qlora-4bit"
    accumulate = int(config["grad_accum"])
    lora = {
        "r": config["r"],
        "lora_alpha": config["lora_alpha"],
        "lora_dropout": config["lora_dropout"],
        "bias": "none",
        "task_type": "CAUSAL_LM",
        "target_modules": list(config["target_modules"]),
    }
    lora_lines = "\n    ".join(f"{name}={value!r}," for name, value in lora.items())
    threads = (
        f"torch.set_num_threads({config['cpu_threads']})  # the run's cpu_threads\n"
        if config.get("cpu_threads")
        else ""
    )
    if quantized:
        load = """import bitsandbytes
from peft import prepare_model_for_kbit_training

quantization = transformers.BitsAndBytesConfig(  # the book's QLoRA: 4-bit NF4, double quantisation
    load_in_4bit=True,
    bnb_4bit_quant_type="nf4",
    bnb_4bit_compute_dtype=where.dtype,
    bnb_4bit_use_double_quant=True,
)
model = transformers.AutoModelForCausalLM.from_pretrained(
    location, dtype=where.dtype, quantization_config=quantization, device_map={"": where.device}
)
model.config.use_cache = False
model = prepare_model_for_kbit_training(
    model, use_gradient_checkpointing=config.gradient_checkpointing,
    gradient_checkpointing_kwargs={"use_reentrant": False},
)"""
    else:
        load = """model = transformers.AutoModelForCausalLM.from_pretrained(location, dtype=where.dtype)
model = model.to(where.device)
model.config.use_cache = False"""
        if config.get("gradient_checkpointing"):
            load += """
model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model.enable_input_require_grads()"""
    optimizer = f"torch.optim.AdamW(parameters, lr={config['learning_rate']!r}, weight_decay=0.0)"
    if quantized:  # the book's paged_adamw_32bit, on a GPU
        optimizer = (
            "(bitsandbytes.optim.PagedAdamW32bit if where.kind == 'cuda' else torch.optim.AdamW)(\n"
            f"    parameters, lr={config['learning_rate']!r}, weight_decay=0.0\n)"
        )
    autocast, forward = "", "loss = model(**next(batches)).loss"
    if method not in (None, "lora-fp32"):
        autocast = (
            "from contextlib import nullcontext\n\n"
            "# On a GPU the lab computes in its 16-bit type under autocast (in float16 it also scales\n"
            "# the loss with torch.amp.GradScaler, as Trainer's fp16=True does: not written out here).\n"
            "cuda = where.kind == 'cuda'\n"
            "autocast = torch.autocast('cuda', dtype=where.dtype) if cuda else nullcontext()\n"
        )
        forward = "with autocast:\n            loss = model(**next(batches)).loss"
    return f"""
# The book's way (chapter 12) with peft: a LoRA adapter on the base model, trained by the lab's loop
# written out (the book's SFTTrainer settings, the same data order and seed: the same loss curve).
import math

import torch
import transformers
from peft import LoraConfig, get_peft_model
from lab import device, finetune, models

where = device.select(config.device)  # the lab's device and precision
{threads}torch.manual_seed(config.seed)  # LoRA's initial weights and dropout draw from it
model_id, path = finetune.model_and_path(config.base_model)
location = models.locate(model_id, "model", path)
tokenizer = transformers.AutoTokenizer.from_pretrained(models.locate(model_id, "tokenizer", path))
chats = finetune.load_conversations(config.dataset, config.max_examples, config.eval_examples, config.seed)
template = finetune.chat_template(tokenizer, model_id)
data = finetune.tokenize(tokenizer, chats, template, config.max_seq_length, config.answers_only)
{load}
peft_config = LoraConfig(
    {lora_lines}
)
model = get_peft_model(model, peft_config)
model.print_trainable_parameters()

parameters = [p for p in model.parameters() if p.requires_grad]
optimizer = {optimizer}
steps = finetune.steps_for(config, len(data.train))
scheduler = transformers.get_scheduler(
    {config["lr_scheduler"]!r}, optimizer, num_warmup_steps=math.ceil({config["warmup_ratio"]!r} * steps),
    num_training_steps=steps,
)
{autocast}
masks = data.train_loss or [[True] * len(ids) for ids in data.train]  # which tokens count for the loss
examples = [
    (torch.tensor(ids), torch.tensor([t if counted else -100 for t, counted in zip(ids, mask)]))
    for ids, mask in zip(data.train, masks)
]
pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def shuffled_batches(size):
    \"\"\"Batches in a seeded random order, epoch after epoch, right-padded (the lab's, as Trainer's).\"\"\"
    pad = torch.nn.utils.rnn.pad_sequence
    generator = torch.Generator().manual_seed(config.seed)
    while True:
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), size):
            rows = [examples[i] for i in order[start : start + size]]
            batch = {{
                "input_ids": pad([ids for ids, _ in rows], batch_first=True, padding_value=pad_id),
                "attention_mask": pad([torch.ones_like(ids) for ids, _ in rows], batch_first=True),
                "labels": pad([labels for _, labels in rows], batch_first=True, padding_value=-100),
            }}
            yield {{name: tensor.to(where.device) for name, tensor in batch.items()}}


batches = shuffled_batches({int(config["batch_size"])})
book_losses = []
model.train()
for step in range(1, steps + 1):
    step_loss = 0.0
    for _ in range({accumulate}):  # gradient accumulation
        {forward}
        (loss / {accumulate}).backward()
        step_loss += loss.item() / {accumulate}
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    book_losses.append((step, step_loss))
print("loss by step:", [round(loss, 4) for _, loss in book_losses])
"""


def finetune_compare(adapter: str, base_model: str | None, max_new_tokens: int) -> str:
    """Base and fine-tuned answers with transformers and peft, greedy (``book_base``, ``book_tuned``)."""
    from lab.finetune.compare import base_model_of

    try:
        base = base_model_of(Path(adapter), base_model)
    except (OSError, ValueError, KeyError):  # no run settings or adapter config to read it from
        return ""
    return f"""
# The book's way (chapter 12): the base model answers, then the same model with the adapter merged in.
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from lab import device, finetune, models

{PLACE}
model_id, path = finetune.model_and_path({base!r})  # the run's base model
tokenizer = AutoTokenizer.from_pretrained(ADAPTER)  # saved with the adapter and the chat template it learnt
messages = [{{"role": "user", "content": PROMPT}}]
text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
input_ids = torch.tensor([finetune.encode_text(tokenizer, text)], device=where.device)  # BOS once
mask = torch.ones_like(input_ids)
greedy = {{"max_new_tokens": {max_new_tokens}, "do_sample": False, "attention_mask": mask}}
model = AutoModelForCausalLM.from_pretrained(models.locate(model_id, "model", path), dtype=where.dtype)
model = model.to(where.device)
with torch.no_grad():
    base_ids = model.generate(input_ids, **greedy)
    tuned_model = PeftModel.from_pretrained(model, ADAPTER).merge_and_unload()
    tuned_ids = tuned_model.generate(input_ids, **greedy)
book_base = tokenizer.decode(base_ids[0, input_ids.shape[1] :], skip_special_tokens=True)
book_tuned = tokenizer.decode(tuned_ids[0, input_ids.shape[1] :], skip_special_tokens=True)
"""
