"""Tiny random-weight models in their standard on-disk formats, for tests that must not download anything.

Each ``write_*`` function builds a model a few hundred kilobytes to a few megabytes in size, with random
weights from a fixed seed, writes it into a folder in the format its real loader reads, and returns that
folder. The models produce nonsense, but they load through the same code as the real ones, so a test can
check shapes, plumbing and error handling offline and in about a second::

    from lab import models, testing

    folder = testing.write_llama_causal_lm(tmp_path / "llama")
    with models.causal_lm("tiny/llama", path=folder) as model:
        ...

Nothing here touches the network: tokenizers are built from :data:`CORPUS` with the ``tokenizers``
library, and the CLIP model uses the BPE vocabulary that ships inside ``open_clip``. The same arguments
give byte-identical files in every process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

# A few paragraphs in the book's vocabulary; the tokenizers below are built from it, so their vocabularies
# hold real English pieces rather than arbitrary byte pairs.
CORPUS = """\
Large language models read text as tokens. A tokenizer splits a sentence into words, pieces of words or
single bytes, and gives every token a number. The model turns each number into a vector, an embedding,
and passes the vectors through layers of attention and feed-forward networks. Attention lets every token
look at the tokens before it; the feed-forward network transforms each token on its own.

An encoder such as BERT reads the whole sentence at once and is trained to fill in masked words. Its
embeddings are useful for classification, clustering and semantic search. A sentence encoder pools the
token vectors into one vector per text, so that texts with similar meaning have similar vectors.

A decoder such as GPT or Llama predicts the next token, one token at a time. Generation repeats this step:
the model samples a token, appends it to the prompt and predicts again. The temperature controls how
random the choice is. A chat model is a decoder fine-tuned on conversations between a user and an
assistant, written with a chat template.

Multimodal models connect images and text. CLIP trains an image encoder and a text encoder together, so
that a photo of a dog and the caption "a photo of a dog" land close to each other. BLIP-2 passes image
features through a small querying transformer into a frozen language model, which can then answer
questions about the image. Question: what is in the picture? Answer: a cat sitting on a red chair.
"Attention is all you need!" is the title of the 2017 paper that introduced the Transformer; it's short.
Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 100 and 2024 appear in text too.
"""

# ChatML, as used by SmolLM2 and Qwen: simple, and its markers are single special tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDPIECE_SUFFIXES = ["##s", "##es", "##ed", "##er", "##ers", "##ing", "##ly", "##tion", "##ions"]
BPE_SPECIALS = ["<|endoftext|>", "<s>", "</s>", "<unk>"]
CHAT_SPECIALS = ["<|im_start|>", "<|im_end|>"]
SEED = 0
# The size of every tiny random model's blocks: one layer, two heads, 32 wide (fast to build and to run).
TINY_BLOCKS = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


@contextmanager
def _seeded() -> Iterator[None]:
    """Seed torch for a reproducible build without disturbing the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        yield


def _folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- tokenizers ----------------------------------------------------------------------------------


def _wordpiece_vocab(vocab_size: int) -> list[str]:
    """Specials, every character (alone and as ``##`` continuation), common suffixes, then whole words.

    Built by hand rather than with ``WordPieceTrainer``, whose ties break in hash-map order, so its
    vocabulary changes from one process to the next.
    """
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    text = normalizers.BertNormalizer(lowercase=True).normalize_str(CORPUS)
    words = Counter(word for word, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text))
    chars = sorted({char for word in words for char in word})
    vocab = [*WORDPIECE_SPECIALS, *chars, *(f"##{c}" for c in chars), *WORDPIECE_SUFFIXES]
    # Most frequent words first: common words stay whole, rare and unseen ones split into pieces.
    whole = [word for word in words if len(word) > 1 and word not in vocab]
    ranked = sorted(whole, key=lambda word: (-words[word], word))
    return vocab + ranked[: max(0, vocab_size - len(vocab))]


def _wordpiece_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(_wordpiece_vocab(vocab_size))}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # as BertTokenizer
    )


def _bpe_tokenizer(vocab_size: int, extra_specials: list[str]) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # The full 256-byte alphabet makes every string encodable, as in GPT-2 and Llama 3: no <unk> ever.
    # It also makes training reproducible: the trainer sorts the alphabet and breaks ties by token id.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=BPE_SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra_specials])
    # Llama-style: encoding prepends <s> (and no </s>).
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A",
        pair="<s> $A <s> $B",
        special_tokens=[("<s>", backend.token_to_id("<s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        model_max_length=128,
        # Decoder-only models take no token_type_ids; returning them breaks `model(**inputs)`.
        model_input_names=["input_ids", "attention_mask"],
    )


def build_tokenizer(kind: Literal["wordpiece", "bpe"] = "wordpiece", vocab_size: int = 400) -> Any:
    """Build (without saving) the tokenizer that :func:`write_tokenizer` writes.

    Args:
        kind: ``"wordpiece"`` (BERT-like, lower-cased) or ``"bpe"`` (byte-level, Llama-like, with a
            ChatML chat template).
        vocab_size: upper bound before added special tokens; the corpus is small, so the result may be
            smaller.

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    if kind == "wordpiece":
        return _wordpiece_tokenizer(vocab_size)
    if kind == "bpe":
        tokenizer = _bpe_tokenizer(vocab_size, CHAT_SPECIALS)
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer
    raise ValueError(f"unknown tokenizer kind {kind!r}: use 'wordpiece' or 'bpe'")


def write_tokenizer(
    path: str | Path, kind: Literal["wordpiece", "bpe"] = "wordpiece", vocab_size: int = 400
) -> Path:
    """Write a small real tokenizer folder (``tokenizer.json`` + config), built from :data:`CORPUS`.

    Load it with ``AutoTokenizer.from_pretrained(path)`` or ``lab.models.tokenizer(id, path=path)``.

    Args:
        kind: ``"wordpiece"``: BERT-like with [PAD]/[UNK]/[CLS]/[SEP]/[MASK]; ``"bpe"``: byte-level BPE
            with <|endoftext|>/<s>/</s>/<unk>, <|im_start|>/<|im_end|> and a ChatML chat template.
        vocab_size: upper bound before added special tokens.
    """
    folder = _folder(path)
    build_tokenizer(kind, vocab_size).save_pretrained(folder)
    return folder


# -- transformers models -------------------------------------------------------------------------


def write_bert_encoder(
    path: str | Path, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4
) -> Path:
    """Write a tiny random BERT (``BertModel``, safetensors) with its WordPiece tokenizer.

    Load it with ``lab.models.encoder(id, path=path)`` or ``AutoModel.from_pretrained(path)``.
    """
    from transformers import BertConfig, BertModel

    folder = _folder(path)
    tokenizer = build_tokenizer("wordpiece")
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=37,
        max_position_embeddings=128,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    with _seeded():
        model = BertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def write_sentence_encoder(path: str | Path, max_seq_length: int = 128) -> Path:
    """Write a tiny random sentence-transformers model: the BERT of :func:`write_bert_encoder` + mean pooling.

    Load it with ``lab.models.sentence_encoder(id, path=path)`` or ``SentenceTransformer(path)``; its
    vectors have 32 dimensions. The BERT files sit at the top of the folder, as in
    ``sentence-transformers/all-MiniLM-L6-v2``, so ``AutoModel.from_pretrained(path)`` reads it too.
    """
    try:  # sentence-transformers >= 6 moved the modules; older versions only have the old path
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    from sentence_transformers import SentenceTransformer

    folder = write_bert_encoder(path)
    transformer = Transformer(str(folder), max_seq_length=max_seq_length)
    hidden = transformer.auto_model.config.hidden_size
    model = SentenceTransformer(modules=[transformer, Pooling(hidden, "mean")], device="cpu")
    model.save(str(folder))
    return folder


def write_llama_causal_lm(
    path: str | Path, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2
) -> Path:
    """Write a tiny random Llama (``LlamaForCausalLM``, safetensors) with a BPE tokenizer and chat template.

    It uses grouped-query attention (4 query heads sharing 2 key/value heads), like Llama 3. Load it with
    ``lab.models.causal_lm(id, path=path)`` and ``lab.models.tokenizer(id, path=path)``, or with
    ``AutoModelForCausalLM`` / ``AutoTokenizer``.
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder = _folder(path)
    tokenizer = build_tokenizer("bpe")
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=64,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        **ids,
    )
    with _seeded():
        model = LlamaForCausalLM(config)
    # Greedy by default, so a test's `generate` is deterministic without passing do_sample=False.
    model.generation_config = GenerationConfig(do_sample=False, **ids)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def write_t5_seq2seq(path: str | Path) -> Path:
    """Write a tiny random 1-layer T5 (``T5ForConditionalGeneration``) with a WordPiece tokenizer: Flan-T5's
    encoder-decoder path (a prompt in, text out) without its 300 MB of weights."""
    from transformers import T5Config, T5ForConditionalGeneration

    folder = _folder(path)
    tokenizer = build_tokenizer("wordpiece")
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_ff=32,
        d_kv=8,
        num_layers=1,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    with _seeded():
        model = T5ForConditionalGeneration(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


# -- multimodal ----------------------------------------------------------------------------------


def open_clip_model_cfg(image_size: int = 32) -> dict[str, Any]:
    """The ``model_cfg`` of :func:`write_open_clip`: a ViT image tower and a transformer text tower."""
    return {
        "embed_dim": 16,
        # head_width sets the number of heads (width // head_width); open_clip's default of 64 would
        # leave a 32-wide tower with none.
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": 16,
            "width": 32,
            "layers": 1,
            "head_width": 16,
        },
        # The vocabulary and context are fixed by open_clip's built-in CLIP tokenizer (SimpleTokenizer).
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


def write_open_clip(path: str | Path, image_size: int = 32) -> Path:
    """Write a tiny random open_clip CLIP in open_clip's Hugging Face Hub folder format.

    The folder holds ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``, as
    ``open_clip.push_to_hf_hub`` writes it) and ``open_clip_model.safetensors``. Load it with open_clip's
    ``local-dir:`` schema, which reads the same files as ``hf-hub:``::

        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")  # the built-in CLIP BPE, 77 tokens

    Images are resized to ``image_size`` pixels; both towers embed into 16 dimensions. Most of its
    6 MB is the 49,408-row token embedding that CLIP's tokenizer needs.
    """
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from safetensors.torch import save_file

    folder = _folder(path)
    model_cfg = open_clip_model_cfg(image_size)
    with _seeded():
        model = open_clip.CLIP(**model_cfg)
    preprocess_cfg = {
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    # contiguous(): safetensors refuses views, and open_clip's state dict holds a few.
    tensors = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(tensors, str(folder / "open_clip_model.safetensors"))
    return folder


def write_blip2(path: str | Path, image_size: int = 32, num_query_tokens: int = 4) -> Path:
    """Write a tiny random BLIP-2 (ViT + Q-Former + OPT) with its ``Blip2Processor``, in transformers' format.

    Load it as the real ``Salesforce/blip2-opt-2.7b``::

        processor = Blip2Processor.from_pretrained(path)
        model = Blip2ForConditionalGeneration.from_pretrained(path)
        inputs = processor(images=image, text="Question: what is it? Answer:", return_tensors="pt")
        model.generate(**inputs, max_new_tokens=5)

    The processor puts ``num_query_tokens`` ``<image>`` tokens before the text; the model replaces them
    with the Q-Former's outputs, so the processor and the model config must agree on that number.
    """
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
    )
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    folder = _folder(path)
    # <image> is added here, not by Blip2Processor, so the vocabulary size is final before the model exists.
    tokenizer = _bpe_tokenizer(400, ["<image>"])
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = Blip2VisionConfig(**TINY_BLOCKS, intermediate_size=64, image_size=image_size, patch_size=16)
    # One Q-Former layer; cross_attention_frequency (2) puts cross-attention to the image on layer 0.
    qformer = Blip2QFormerConfig(
        **TINY_BLOCKS, intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=64
    )
    text = OPTConfig(
        vocab_size=len(tokenizer),
        **TINY_BLOCKS,
        word_embed_proj_dim=32,
        ffn_dim=64,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Blip2Config(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=text.to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_id,
    )
    with _seeded():
        model = Blip2ForConditionalGeneration(config)
    model.save_pretrained(folder, safe_serialization=True)
    image_processor = BlipImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    Blip2Processor(image_processor, tokenizer, num_query_tokens=num_query_tokens).save_pretrained(folder)
    return folder
