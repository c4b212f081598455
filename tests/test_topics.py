"""lab.topics (the pipeline, its pictures, the tab's presenters): small precomputed embeddings with fast
stand-ins (PCA, k-means) and a tiny random sentence encoder (plumbing), then the real Wikipedia corpus with
the book's pipeline (slow)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab import export, testing, topics
from tests.helpers import by_suffix, check_figures, rows

THEMES = {
    "sport": "football league goal match team player cup season coach stadium referee striker",
    "food": "bread cheese recipe cook oven flour butter sugar kitchen taste soup bake",
    "space": "planet star orbit rocket moon galaxy telescope astronaut launch comet nebula",
    "music": "song album band guitar concert singer melody rhythm piano record chorus tour",
}
TINY = "test/tiny-sentence"  # found in LAB_MODEL_DIR as test--tiny-sentence


@pytest.fixture(scope="module")
def themes() -> dict:
    """200 documents in four themes with their own words, and 32-d embeddings clustered by theme."""
    rng = np.random.default_rng(0)
    docs, labels, vectors = [], [], []
    for k, (label, words) in enumerate(THEMES.items()):
        centre = np.zeros(32)
        centre[k * 8 : k * 8 + 8] = 3.0
        vocabulary = words.split()
        for i in range(50):
            docs.append(f"{' '.join(rng.choice(vocabulary, size=10))} number {i} of {label}")
            labels.append(label)
            vectors.append(centre + rng.normal(scale=0.5, size=32))
    return {"docs": docs, "labels": labels, "embeddings": np.asarray(vectors, dtype=np.float32)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("models")
    testing.write_sentence_encoder(folder / "test--tiny-sentence")
    return str(folder)


@pytest.fixture
def isolated(tmp_path, monkeypatch, model_dir):
    """A fresh disk cache and the tiny encoder in LAB_MODEL_DIR. The in-memory stage caches are kept (other
    tests share the Wikipedia UMAP through them): tests that count stages use a seed of their own."""
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LAB_MODEL_DIR", model_dir)
    return tmp_path


@pytest.fixture(scope="module")
def fast_run(themes, model_dir):
    """PCA + k-means on the precomputed embeddings, queries embedded by the tiny encoder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAB_MODEL_DIR", model_dir)
        run = topics.fit(
            themes["docs"],
            titles=[f"doc {i}" for i in range(len(themes["docs"]))],
            embeddings=themes["embeddings"],
            embedding_model=TINY,
            reduction="pca",
            clustering="kmeans",
            n_clusters=4,
        )
        yield run


def test_fit_with_pca_and_kmeans_recovers_the_four_themes(fast_run, themes):
    assert fast_run.n_topics == 4 and fast_run.outlier_share == 0
    assert list(fast_run.info.columns[:4]) == ["Topic", "Count", "Name", "Representation"]
    assert sorted(fast_run.info["Count"]) == [50, 50, 50, 50]
    assert fast_run.reduced_2d.shape == (200, 2) and len(fast_run.topics) == 200
    score = topics.agreement(fast_run.topics, themes["labels"])
    assert score["nmi_all"] == pytest.approx(1.0) and score["ari_non_outliers"] == pytest.approx(1.0)
    # c-TF-IDF names each topic by its theme's own words
    sport = fast_run.topics[0]
    assert set(w for w, _ in topics.topic_words(fast_run, sport)[:5]) <= {*THEMES["sport"].split(), "sport"}
    assert fast_run.cached["embeddings"] and {"umap", "clustering", "ctfidf", "total"} <= set(
        fast_run.timings
    )


def test_find_topics_works_with_precomputed_embeddings(fast_run):
    # BERTopic refuses find_topics without an embedding model; the lab always gives it one.
    hits = topics.search(fast_run, "football and goals", top_n=3)
    assert len(hits) == 3 and hits[0][1] >= hits[1][1] >= hits[2][1]
    assert {t for t, _, _ in hits} <= set(fast_run.topics)
    with pytest.raises(ValueError, match="Type something"):
        topics.search(fast_run, "  ")


def test_hdbscan_change_reclusters_without_recomputing_the_reduction(isolated, themes):
    kwargs = {"embeddings": themes["embeddings"], "embedding_model": TINY, "reduction": "pca", "seed": 11}
    runs = dict(topics.STAGE_RUNS)
    first = topics.fit(themes["docs"], hdbscan_params={"min_cluster_size": 20}, **kwargs)
    assert not first.cached["umap"] and first.n_topics == 4
    # The 2-d layout for maps waits until a map asks for it, then is kept for every run that shares it.
    assert "umap_2d" not in first.cached and not first.layout_ready
    assert topics.STAGE_RUNS["umap_2d"] == runs.get("umap_2d", 0)
    assert first.reduced_2d.shape == (200, 2) and first.layout_ready and first.cached["umap_2d"] is False
    runs = dict(topics.STAGE_RUNS)
    second = topics.fit(themes["docs"], hdbscan_params={"min_cluster_size": 10, "min_samples": 5}, **kwargs)
    assert second.cached == {
        "embeddings": True,
        "umap": True,
        "umap_2d": True,
        "clustering": False,
        "ctfidf": False,
    }
    assert second.timings["umap"] == second.timings["umap_2d"] == 0
    assert np.array_equal(second.reduced_2d, first.reduced_2d)
    assert topics.STAGE_RUNS["umap"] == runs["umap"] and topics.STAGE_RUNS["umap_2d"] == runs["umap_2d"]
    assert topics.STAGE_RUNS["clustering"] == runs["clustering"] + 1
    assert topics.STAGE_RUNS["ctfidf"] == runs["ctfidf"] + 1
    # Only nr_topics changes: the clustering is reused too.
    third = topics.fit(
        themes["docs"], hdbscan_params={"min_cluster_size": 10, "min_samples": 5}, nr_topics=3, **kwargs
    )
    assert third.cached["clustering"] and third.n_topics == 3


# -- a collapse of the topics, explained (HDBSCAN is exact: these constructed cases collapse anywhere) ------


def nested_groups(spread: float, noise: float) -> dict:
    """480 documents in 12 groups of 40: six groups around each of two far-apart centres (8-d, the six at
    ``spread`` from their centre along ±3 axes), so HDBSCAN's cluster tree splits in 2, then in 12."""
    rng = np.random.default_rng(0)
    offsets = [sign * spread * np.eye(8)[axis] for axis in range(3) for sign in (1, -1)]
    vectors, docs = [], []
    for half in range(2):
        centre = np.zeros(8)
        centre[3] = 30.0 * half
        for g, offset in enumerate(offsets):
            vectors.append(centre + offset + rng.normal(scale=noise, size=(40, 8)))
            docs += [f"group{half}x{g} word{half}{g} note {i}" for i in range(40)]
    return {"docs": docs, "embeddings": np.vstack(vectors).astype(np.float32)}


def test_a_root_split_is_explained_and_leaf_selection_undoes_it(isolated):
    data = nested_groups(spread=2.0, noise=0.3)
    kwargs = {"embeddings": data["embeddings"], "embedding_model": TINY, "reduction": "pca", "seed": 21}
    run = topics.fit(data["docs"], hdbscan_params={"min_cluster_size": 30}, **kwargs)
    assert run.n_topics == 2  # excess of mass: the two halves are more stable than their six groups
    collapse = topics.detect_collapse(run)
    assert collapse is not None and collapse.root_split and collapse.before_topics is None
    assert collapse.largest_share == pytest.approx(0.5)
    words = collapse.explanation()
    assert "excess-of-mass" in words and "first split of its cluster tree" in words and "50%" in words
    clustered = topics.STAGE_RUNS["clustering"]
    fix = topics.find_fix(run, collapse)
    assert fix is not None and fix.changed == {"cluster_selection_method": "leaf"} and fix.n_topics > 2
    assert fix.hdbscan_params["min_cluster_size"] == 30 and "leaf" in fix.label()
    assert topics.STAGE_RUNS["clustering"] == clustered + 3  # min_cluster_size 33 and 27 (no help), leaf
    fixed = topics.fit(data["docs"], hdbscan_params=fix.hdbscan_params, **kwargs)
    assert fixed.cached["umap"] and fixed.cached["clustering"] and fixed.n_topics == fix.n_topics
    assert topics.detect_collapse(fixed, previous=run) is None  # more topics is no collapse
    report = topics.view.fit_report(run, topics.Corpus("groups", data["docs"]))  # what the web API says
    assert report["collapse"] == words
    note = topics.view.collapse_markdown(collapse, fix)
    assert "The topics collapsed" in note and "cluster_selection_method='leaf'" in note


def test_a_refit_that_collapses_is_compared_with_the_run_before(isolated):
    data = nested_groups(spread=3.0, noise=0.2)
    kwargs = {"embeddings": data["embeddings"], "embedding_model": TINY, "reduction": "pca", "seed": 22}
    before = topics.fit(data["docs"], hdbscan_params={"min_cluster_size": 30}, **kwargs)
    after = topics.fit(data["docs"], hdbscan_params={"min_cluster_size": 40}, **kwargs)
    assert before.n_topics == 12 and after.n_topics == 2  # groups of 40 cannot split off at 40
    collapse, fix = topics.diagnose(after, previous=before)
    assert (
        collapse.before_topics == 12
        and collapse.n_topics == 2
        and "previous fit found 12" in (collapse.explanation())
    )
    assert fix is not None and fix.changed == {"min_cluster_size": 35} and fix.n_topics == 12  # nearest first
    assert topics.diagnose(before, previous=after) == (None, None)
    # Merging topics on purpose, and k-means, are no collapse.
    merged = topics.fit(data["docs"], hdbscan_params={"min_cluster_size": 30}, nr_topics=2, **kwargs)
    assert topics.detect_collapse(merged, previous=before) is None
    kmeans = topics.fit(data["docs"], clustering="kmeans", n_clusters=2, **kwargs)
    assert topics.detect_collapse(kmeans, previous=before) is None


def test_embeddings_are_kept_on_disk_by_model_and_corpus(isolated, themes):
    kwargs = {"embedding_model": TINY, "reduction": "pca", "clustering": "kmeans", "n_clusters": 4}
    first = topics.fit(themes["docs"], seed=12, **kwargs)
    assert not first.cached["embeddings"] and first.embeddings.shape == (200, 32)
    runs = topics.STAGE_RUNS["embeddings"]
    again = topics.fit(themes["docs"], seed=13, **kwargs)  # a new seed: nothing in memory matches
    assert again.cached["embeddings"] and not again.cached["umap"]
    assert topics.STAGE_RUNS["embeddings"] == runs and np.array_equal(again.embeddings, first.embeddings)
    assert (
        len(list((isolated / "cache" / "topics" / "embeddings" / "test--tiny-sentence").glob("*.npy"))) == 1
    )
    other = topics.fit(themes["docs"][:-1], seed=12, **kwargs)  # another corpus: another file
    assert not other.cached["embeddings"] and topics.STAGE_RUNS["embeddings"] == runs + 1


def test_long_documents_are_counted_as_truncated(isolated):
    docs = [f"short document number {i}" for i in range(11)] + [" ".join(["word"] * 400)]
    embedded = topics.embed_documents(docs, TINY)
    assert embedded.vectors.shape == (12, 32) and embedded.truncated == 1 and embedded.max_tokens == 128
    run = topics.fit(docs, embedding_model=TINY, reduction="pca", clustering="kmeans", n_clusters=2)
    assert any("1 of 12 documents are longer than" in note for note in run.notes)


def test_outlier_reduction_and_topic_reduction(themes):
    noisy = np.concatenate([themes["embeddings"], np.random.default_rng(1).normal(scale=6, size=(20, 32))])
    docs = themes["docs"] + [f"stray note {i} about nothing in particular" for i in range(20)]
    kept = topics.fit(
        docs, embeddings=noisy, embedding_model=TINY, reduction="pca", hdbscan_params={"min_cluster_size": 15}
    )
    assert -1 in kept.topics
    reduced = topics.fit(
        docs,
        embeddings=noisy,
        embedding_model=TINY,
        reduction="pca",
        hdbscan_params={"min_cluster_size": 15},
        outliers="c-tf-idf",
    )
    assert reduced.outlier_share < kept.outlier_share and reduced.cached["clustering"]
    assert any("Outlier reduction" in note for note in reduced.notes)
    merged = topics.fit(
        themes["docs"], embeddings=themes["embeddings"], embedding_model=TINY, reduction="pca",
        clustering="kmeans", n_clusters=4, nr_topics=2,
    )  # fmt: skip
    assert merged.n_topics == 2


def test_agreement_with_and_without_outliers():
    labels = ["a", "a", "b", "b", "c", "c"]
    score = topics.agreement([0, 0, 1, 1, -1, -1], labels)
    assert score["nmi_all"] == pytest.approx(1.0)  # outliers are one more group, here exactly "c"
    assert score["nmi_non_outliers"] == pytest.approx(1.0) and score["outlier_share"] == pytest.approx(1 / 3)
    mixed = topics.agreement([0, 1, 0, 1, -1, 0], labels)
    assert mixed["nmi_all"] < 0.5 and mixed["topics"] == 2
    assert topics.agreement([0, 1], None) is None
    assert topics.agreement([-1, -1, -1], ["a", "b", "a"])["nmi_non_outliers"] is None


# -- bad input ------------------------------------------------------------------------------------------


def test_fewer_documents_than_min_cluster_size_suggests_a_value_or_kmeans(themes):
    docs = themes["docs"][:30]
    with pytest.raises(topics.TopicInputError, match=r"fewer than min_cluster_size=50.*6 or less.*k-means"):
        topics.fit(docs, embeddings=themes["embeddings"][:30], reduction="pca")
    run = topics.fit(
        docs, embeddings=themes["embeddings"][:30], reduction="pca", clustering="kmeans", n_clusters=3
    )
    assert run.n_topics == 3
    with pytest.raises(topics.TopicInputError, match="at least 10"):
        topics.fit(docs[:5], embeddings=themes["embeddings"][:5], reduction="pca", clustering="kmeans")


def test_all_outliers_and_a_single_topic_say_what_to_change(themes):
    rng = np.random.default_rng(3)
    scattered = rng.uniform(size=(120, 32)).astype(np.float32)
    docs = [f"scattered note {i}" for i in range(120)]
    with pytest.raises(topics.TopicInputError, match="all 120 documents as outliers.*Lower min_cluster_size"):
        topics.fit(docs, embeddings=scattered, reduction="pca", hdbscan_params={"min_cluster_size": 120})
    single = topics.fit(
        docs, embeddings=scattered, embedding_model=TINY, reduction="pca", clustering="kmeans", n_clusters=1
    )
    assert single.n_topics == 1 and any("single topic" in note for note in single.notes)
    with pytest.raises(ValueError, match="at least 2 topics"):
        topics.heatmap(single)
    assert topics.barchart(single) is not None


def test_empty_and_duplicate_documents_are_dropped_with_notes(themes):
    docs, titles, labels, _, notes = topics.clean_documents(
        ["one", "", "  ", "two", "one", None, "three"], titles=list("abcdefg"), labels=list("xxxyyyz")
    )
    assert docs == ["one", "two", "three"] and titles == ["a", "d", "g"] and labels == ["x", "y", "z"]
    assert notes == ["3 empty documents dropped.", "1 duplicate document dropped (first kept)."]
    with pytest.raises(topics.TopicInputError, match="every one is empty"):
        topics.clean_documents(["", " "])
    with pytest.raises(topics.TopicInputError, match="duplicates"):
        topics.fit(["same"] * 20, embeddings=themes["embeddings"][:20])


def test_document_caps(monkeypatch):
    monkeypatch.setattr(topics.corpora, "MAX_DOCS", 5)
    with pytest.raises(topics.TopicInputError, match="at most 5 at a time"):
        topics.clean_documents([f"doc {i}" for i in range(6)])
    monkeypatch.setattr(topics.uploads, "MAX_UPLOAD_BYTES", 10)
    with pytest.raises(topics.TopicInputError, match="at most"):
        topics.decode_upload(b"x" * 11, "big.txt")


def test_uploads_text_csv_encodings_and_missing_columns(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_bytes("Caf\xe9 cr\xe8me\n\nsecond line\nsecond line\n".encode("cp1252"))
    corpus = topics.read_text_file(text)
    assert corpus.docs == ["Café crème", "second line"]
    assert any("not UTF-8" in note and "Windows-1252" in note for note in corpus.notes)
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\x00\x00\x00binary")
    with pytest.raises(topics.TopicInputError, match="binary"):
        topics.read_text_file(binary)

    table = tmp_path / "papers.csv"
    pd.DataFrame(
        {"Title": ["A", "B", "C"], "Abstract": ["first text", "second text", ""], "Area": ["x", "y", "x"]}
    ).to_csv(table, index=False)
    assert topics.csv_columns(table) == ["Title", "Abstract", "Area"]
    corpus = topics.read_csv(table, "Abstract", title_column="Title", label_column="Area")
    assert corpus.docs == ["first text", "second text"] and corpus.titles == ["A", "B"]
    assert corpus.labels == ["x", "y"] and "1 empty document dropped." in corpus.notes
    with pytest.raises(topics.TopicInputError, match="has no column 'Body'.*'Title', 'Abstract', 'Area'"):
        topics.read_csv(table, "Body")
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text("text;label\nhello there;a\ngeneral kenobi;b\n", encoding="utf-8-sig")
    assert topics.read_csv(semicolons, "text", label_column="label").labels == ["a", "b"]


def test_named_corpora():
    wiki = topics.load_corpus("wikipedia")
    manifest = topics.wikipedia_manifest()
    assert len(wiki) == manifest["documents"] == 10_033 and len(set(wiki.labels)) == 12
    assert wiki.embeddings.shape == (10_033, 384) and wiki.embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(wiki.embeddings[:50], axis=1), 1, atol=0.01)
    assert wiki.titles[1] == "2001: A Space Odyssey" and "CC BY-SA" in wiki.source
    assert pd.Series(wiki.labels).value_counts().to_dict() == manifest["labels"]
    with pytest.raises(topics.CorpusUnavailable, match="hf download MaartenGr/arxiv_nlp"):
        topics.load_corpus("arxiv_nlp")  # tests run with HF_HUB_OFFLINE=1
    with pytest.raises(ValueError, match="Unknown corpus"):
        topics.load_corpus("reddit")


# -- representations, plots, exports -----------------------------------------------------------------------


def test_representation_table_puts_original_next_to_keybert_and_mmr(fast_run):
    before = {t: list(w) for t, w in fast_run.model.topic_representations_.items()}
    table = topics.compare_representations(fast_run, fast_run.docs, kinds=("keybert", "mmr"), diversity=0.5)
    assert list(table.columns) == ["Topic", "Original", "KeyBERTInspired", "MMR (diversity 0.5)"]
    assert table["Topic"].tolist() == [0, 1, 2, 3]
    for column in table.columns[1:]:
        assert all(len(cell.split(" | ")) == 5 for cell in table[column])
    assert fast_run.model.topic_representations_ == before  # the fitted model is untouched
    with pytest.raises(ValueError, match="Unknown representation"):
        topics.compare_representations(fast_run, kinds=("llama",))


def test_plots_return_figures(fast_run):
    import matplotlib.figure
    import plotly.graph_objects as go

    sampled = topics.documents_map(fast_run, max_points=120)
    assert isinstance(sampled, go.Figure) and "120 of 200 documents" in sampled.layout.title.text
    assert sum(len(trace.x) for trace in sampled.data) == 120
    annotated = topics.documents_map(fast_run, hide_annotations=False)
    assert "all 200 documents" in annotated.layout.title.text and len(annotated.layout.annotations) == 4
    for draw in (topics.barchart, topics.heatmap, topics.hierarchy):
        assert isinstance(draw(fast_run), go.Figure)
    words = topics.topic_words(fast_run, 0)
    assert isinstance(topics.word_bars(words, "topic 0"), go.Figure)
    static = topics.datamap_static(fast_run)
    assert isinstance(static, matplotlib.figure.Figure)


def test_topic_map_exports_draw_both_maps_with_each_documents_coordinates(fast_run):
    table = topics.topic_table(fast_run)
    drawn = {"documents-map": topics.documents_map(fast_run), "datamap": topics.datamap_static(fast_run)}
    points = fast_run.reduced_2d
    for name, figure in drawn.items():
        files = by_suffix(
            export.topic_files(fast_run, table, {name: figure}, stem=f"topics-{name}", layout=True)
        )
        check_figures(files, 1)
        documents = rows(next(p for p in files[".csv"] if p.stem.endswith("-documents")))
        assert documents[0] == ["document", "title", "topic", "x", "y"] and len(documents) == 1 + 200
        assert [int(r[2]) for r in documents[1:]] == fast_run.topics
        assert np.array([r[3:] for r in documents[1:]], dtype=float) == pytest.approx(points, abs=1e-5)
        data = json.loads(files[".json"][0].read_text())
        assert np.asarray(data["coordinates"]) == pytest.approx(points, abs=1e-5)


def test_interactive_map_is_self_contained(fast_run):
    page = topics.interactive_map(
        fast_run, title="Themes", dates=[f"{2000 + i % 20}-01-01" for i in range(200)]
    )
    assert topics.remote_references(page) == []
    assert "fonts.googleapis.com" not in page and "maxcdn.bootstrapcdn.com" not in page
    assert "URL not found in cache" not in page  # every script datamapplot asked for was inlined
    for bundled in ("deck.gl@9.1.8", "apache-arrow@21.2.0", "d3@7.9.2", "jquery@3.7.1"):
        assert f"/* {bundled} " in page
    assert "font-family: 'Roboto'" in page and "data:font/woff2;base64," in page
    assert "Themes" in page and "OFFLINE_MODE = true" in page


def test_exports(fast_run, themes, tmp_path):
    table = pd.read_csv(topics.export_topic_table(fast_run, tmp_path / "topics.csv"))
    assert list(table.columns[:4]) == ["Topic", "Count", "Name", "Representation"] and len(table) == 4
    rows = pd.read_csv(topics.export_document_topics(fast_run, tmp_path / "docs.csv", themes["labels"]))
    assert list(rows.columns) == ["title", "topic", "topic_name", "label"] and len(rows) == 200
    assert topics.save_interactive_map("<html></html>", tmp_path / "map.html").read_text() == "<html></html>"


def test_asset_manifests_match_the_files():
    import hashlib
    import lzma

    manifest = json.loads((topics.DATAMAP_JS / "manifest.json").read_text())
    for info in manifest["scripts"].values():
        data = lzma.decompress((topics.DATAMAP_JS / info["file"]).read_bytes())
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
    assert (topics.DATAMAP_JS / "LICENSES.md").is_file()
    folder = topics.CORPORA / "wikipedia"
    assert "CC BY-SA 4.0" in (folder / "LICENSE.md").read_text()
    total = sum(p.stat().st_size for p in [*folder.iterdir(), *topics.DATAMAP_JS.iterdir()])
    assert total < 15e6


def test_generated_labels_are_cleaned():
    assert topics.clean_label("This topic is about the use of energy.\nMore") == "The use of energy"
    assert topics.clean_label(' "Football clubs" ') == "Football clubs"
    assert topics.clean_label("") == ""


def test_text_generation_with_a_tiny_random_seq2seq_model_plumbing_only(fast_run, model_dir):
    """Flan-T5's path (encoder-decoder) on a random 1-layer T5: a prompt goes in, a label column comes out."""
    folder = Path(model_dir) / "test--tiny-t5"
    if not folder.is_dir():
        testing.write_t5_seq2seq(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAB_MODEL_DIR", model_dir)
        is_seq2seq = topics.representations._is_seq2seq
        assert is_seq2seq("test/tiny-t5") and not is_seq2seq(TINY)
        table = topics.compare_representations(
            fast_run, kinds=("generation",), generator="test/tiny-t5", generation_topics=2
        )
    column = table["Text generation (tiny-t5)"]
    assert all(isinstance(v, str) for v in column) and (column.iloc[2:] == "…").all()
    with pytest.raises(ValueError, match=r"\[DOCUMENTS\]"):
        topics.compare_representations(fast_run, kinds=("generation",), generator="x", prompt="no slots")


def test_the_form_reads_the_chosen_corpus_and_settings(tmp_path):
    table = tmp_path / "papers.csv"
    pd.DataFrame({"title": ["A", "B"], "abstract": ["one text", "two text"], "area": ["x", "y"]}).to_csv(
        table, index=False
    )
    form = {"corpus": "upload", "file": str(table), "text_column": "abstract", "title_column": "title"}
    corpus = topics.corpus_from_form({**form, "label_column": "area", "date_column": topics.NO_COLUMN})
    assert corpus.docs == ["one text", "two text"] and corpus.labels == ["x", "y"] and corpus.dates is None
    with pytest.raises(topics.TopicInputError, match="Upload a CSV"):
        topics.load_choice("upload", None)
    with pytest.raises(topics.TopicInputError, match="column that holds the text"):
        topics.load_choice("upload", str(table), text_column=topics.NO_COLUMN)
    guess = topics.guess_columns(["Title", "Abstract", "Year"])
    assert guess == {"text": "Abstract", "title": "Title", "label": None, "date": "Year"}
    assert topics.guess_columns(["body2", "x"])["text"] == "body2"  # no known name: the first column
    assert len(topics.load_choice("wikipedia")) == 10_033

    # The tab's sliders give floats; 0 means "not set"; "keep" keeps the outliers.
    settings = topics.TopicSettings.from_form(
        {"n_neighbors": 10.0, "min_cluster_size": 20.0, "min_samples": 0, "nr_topics": 0, "outliers": "keep"}
    )
    assert settings.umap["n_neighbors"] == 10 and settings.hdbscan["min_cluster_size"] == 20
    assert settings.hdbscan["min_samples"] is None and settings.nr_topics is None
    assert settings.outliers is None
    assert settings.key() == topics.TopicSettings.from_form({"n_neighbors": 10, "min_cluster_size": 20}).key()
    with pytest.raises(topics.TopicInputError, match="n_neighbors must be a whole number"):
        topics.TopicSettings.from_form({"n_neighbors": "many"})


def test_settings_and_keywords_fit_the_same(fast_run, themes, model_dir, monkeypatch):
    monkeypatch.setenv("LAB_MODEL_DIR", model_dir)
    settings = topics.TopicSettings(embedding_model=TINY, reduction="pca", clustering="kmeans", n_clusters=4)
    run = topics.fit(themes["docs"], settings, embeddings=themes["embeddings"])
    assert run.topics == fast_run.topics and run.params == fast_run.params
    with pytest.raises(topics.TopicInputError, match="Unknown clustering 'dbscan'"):
        topics.fit(themes["docs"], settings, embeddings=themes["embeddings"], clustering="dbscan")


def test_the_tab_presenters(fast_run, themes):
    rows = topics.view.topic_rows(fast_run, themes["labels"])
    assert list(rows.columns) == ["Topic", "Count", "Name", "Main label", "Representation"]
    assert sorted(rows["Main label"]) == ["food (100%)", "music (100%)", "space (100%)", "sport (100%)"]
    assert "| **total** |" in topics.view.timings_markdown(fast_run)
    assert "**4 topics** in 200 documents" in topics.view.summary_markdown(fast_run, topics.Corpus("t", []))
    score = topics.agreement(fast_run.topics, themes["labels"])
    assert "NMI: **1.00**" in topics.view.agreement_markdown(score)
    too_few = topics.view.figure_or_message(lambda run: topics.plots.need_topics(run, 9, "test"), fast_run)
    assert "needs at least 9 topics" in too_few.layout.title.text


def test_a_session_keeps_its_downloads_in_one_folder(fast_run, themes):
    corpus = topics.Corpus("themes", fast_run.docs, labels=themes["labels"])
    session = topics.TopicSession.start(fast_run, corpus)
    (session.folder / "topic_map.html").write_text("the old topics")
    again = topics.TopicSession.start(fast_run, corpus, previous=session)
    assert again.folder == session.folder
    assert [Path(p).name for p in again.downloads()] == ["document_topics.csv", "topics.csv"]
    topics.TopicSession.end(again)
    assert not session.folder.exists()
    topics.TopicSession.end(None)  # no session yet: nothing to do


def test_a_first_session_writes_in_the_folder_it_is_given(fast_run, themes, tmp_path):
    corpus = topics.Corpus("themes", fast_run.docs, labels=themes["labels"])
    made: list[Path] = []

    def new_folder() -> Path:  # as the tab's: a private folder of the student's
        made.append(tmp_path / f"mine-{len(made)}")
        made[-1].mkdir()
        return made[-1]

    first = topics.TopicSession.start(fast_run, corpus, new_folder=new_folder)
    again = topics.TopicSession.start(fast_run, corpus, previous=first, new_folder=new_folder)
    assert first.folder == again.folder == made[0] and len(made) == 1  # asked for the first session only
    assert (made[0] / "topics.csv").is_file()


def test_run_store_fits_once_per_corpus_and_settings(monkeypatch, themes):
    fitted = []

    def fake_fit(corpus, settings):
        fitted.append(settings.key())
        return object()

    monkeypatch.setattr(topics.runs, "fit_corpus", fake_fit)
    monkeypatch.setattr(topics.runs, "load_corpus", lambda name: topics.Corpus(name, ["a"]))
    store = topics.RunStore(size=2)
    first, corpus = store.get("wikipedia", topics.TopicSettings(nr_topics=5))
    assert store.get("wikipedia", topics.TopicSettings(nr_topics=5)) == (first, corpus) and len(fitted) == 1
    store.get("wikipedia", topics.TopicSettings(nr_topics=6))
    store.get("arxiv_nlp", topics.TopicSettings(nr_topics=5))
    assert len(store) == 2 and len(fitted) == 3
    store.get("wikipedia", topics.TopicSettings(nr_topics=5))  # the oldest was dropped
    assert len(fitted) == 4


def test_the_tab_offers_the_fix_one_click_away(isolated):
    """The fix button sets min_cluster_size and cluster_selection_method to the fix, then fits again."""
    import gradio as gr

    from tabs import topics as topics_tab
    from tests.helpers import local_settings

    with gr.Blocks() as demo:
        topics_tab.build(demo, local_settings())
    by_id = {block._id: block for block in demo.blocks.values()}
    elem = {getattr(block, "elem_id", None): block._id for block in demo.blocks.values()}
    button = elem["topics-collapse-fix"]
    apply = next(fn for fn in demo.fns.values() if (button, "click") in fn.targets)
    outputs = [by_id[o._id].elem_id for o in apply.outputs]
    assert outputs == ["topics-min-cluster-size", "topics-selection"]
    refit = next(fn for fn in demo.fns.values() if fn.trigger_after == apply._id)
    assert elem["topics-summary"] in [o._id for o in refit.outputs] and refit.trigger_only_on_success

    data = nested_groups(spread=2.0, noise=0.3)
    kwargs = {"embeddings": data["embeddings"], "embedding_model": TINY, "reduction": "pca", "seed": 21}
    run = topics.fit(data["docs"], hdbscan_params={"min_cluster_size": 30}, **kwargs)
    collapse, fix = topics.diagnose(run)
    session = topics.TopicSession.start(run, topics.Corpus("groups", data["docs"]), fix=fix)
    size, selection = apply.fn(session)
    assert size["value"] == 30 and selection["value"] == "leaf"
    session.close()


# -- the real corpus and models (slow) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def wiki_run():
    """The book's pipeline on the Wikipedia corpus (UMAP compiles on first use: about a minute)."""
    corpus = topics.load_corpus("wikipedia")
    # As the tab and the API fit it: the book's pipeline, English stop words out of the topic words.
    return corpus, topics.fit(
        corpus.docs, titles=corpus.titles, embeddings=corpus.embeddings, stop_words=True
    )


def check_run(run: topics.TopicRun, docs: list[str]) -> None:
    """What holds for any fitted run, on any machine: one topic per document, ids from -1 up without gaps,
    counts that add up, and topic words that occur in the topic's own documents (c-TF-IDF weighs a word
    by its frequency in the topic: a word absent from it weighs 0)."""
    assert len(run.topics) == len(docs) and run.n_topics >= 1 and 0 <= run.outlier_share < 1
    assert set(run.topics) - {-1} == set(range(run.n_topics))
    counts = pd.Series(run.topics).value_counts().to_dict()
    assert dict(zip(run.info["Topic"], run.info["Count"])) == counts and sum(counts.values()) == len(docs)
    for topic in sorted(counts)[:8]:
        text = " ".join(d for d, t in zip(docs, run.topics) if t == topic).lower()
        words = [w for w, _ in topics.topic_words(run, topic)]
        assert words and all(re.search(rf"\b{re.escape(w)}\b", text) for w in words), (topic, words)


@pytest.mark.slow
def test_wikipedia_with_the_books_defaults(wiki_run):
    """Invariants, agreement far above chance, and stage caching. How many topics HDBSCAN finds depends on
    UMAP's layout, which differs between machines (numba, CPU features): the bench reports it."""
    corpus, run = wiki_run
    check_run(run, corpus.docs)
    score = topics.agreement(run.topics, corpus.labels)
    print(f"\nWikipedia, book defaults: {json.dumps(score)}; timings {json.dumps(run.timings)}")
    # The topics carry information about the labels: NMI far above that of the same topics shuffled
    # (for independent groupings of 10,033 documents NMI is ~k/N, a few thousandths).
    shuffled = np.random.default_rng(0).permutation(run.topics)
    chance = topics.agreement(shuffled, corpus.labels)["nmi_all"]
    assert 0 <= chance < 0.02 and score["nmi_all"] > max(0.05, 5 * chance)
    assert 0 <= score["nmi_all"] <= 1 and 0 <= score["nmi_non_outliers"] <= 1
    hits = topics.search(run, "football", top_n=3)
    assert len({t for t, _, _ in hits}) == len(hits) == min(3, len(run.info))
    assert hits[0][1] >= hits[1][1] >= hits[2][1] and {t for t, _, _ in hits} <= set(run.topics)
    assert "umap_2d" not in run.cached  # no map asked for yet: a fit computes what BERTopic's does

    # An HDBSCAN change re-runs only the clustering and c-TF-IDF: no embedding, no UMAP.
    stages = dict(topics.STAGE_RUNS)
    refit = topics.fit(
        corpus.docs,
        titles=corpus.titles,
        embeddings=corpus.embeddings,
        hdbscan_params={"min_cluster_size": 40},
        stop_words=True,
    )
    assert refit.cached["embeddings"] and refit.cached["umap"] and not refit.cached["clustering"]
    assert refit.timings["embeddings"] == refit.timings["umap"] == 0
    assert refit.reduction is run.reduction and np.array_equal(refit.reduced, run.reduced)
    for stage in ("embeddings", "umap", "umap_2d"):
        assert topics.STAGE_RUNS[stage] == stages.get(stage, 0), stage
    assert topics.STAGE_RUNS["clustering"] == stages["clustering"] + 1
    check_run(refit, corpus.docs)
    # Whatever HDBSCAN made of it here, a collapse is explained and its fix (if any) does not collapse.
    collapse, fix = topics.diagnose(refit, previous=run)
    if collapse is not None:
        assert collapse.explanation() and (fix is None or fix.n_topics > collapse.n_topics)

    # The 2-d layout, once asked for, is computed once and shared by both runs.
    assert run.reduced_2d.shape == (10_033, 2) and np.isfinite(run.reduced_2d).all()
    assert refit.layout_ready and topics.STAGE_RUNS["umap_2d"] == stages.get("umap_2d", 0) + 1


@pytest.mark.slow
def test_same_seed_same_topics_on_this_machine(monkeypatch):
    """UMAP with a random_state runs single-threaded and is repeatable on one machine (not across
    machines): the same seed twice, from scratch, gives identical reduced embeddings and topics."""
    corpus = topics.load_corpus("wikipedia")
    pick = np.random.default_rng(5).choice(len(corpus.docs), size=2_000, replace=False)
    docs, vectors = [corpus.docs[i] for i in pick], corpus.embeddings[pick]
    runs = []
    for _ in range(2):  # fresh stage caches each time, so both runs compute every stage
        monkeypatch.setattr(topics.stages, "_REDUCED", topics.stages.Memo(2))
        monkeypatch.setattr(topics.stages, "_CLUSTERS", topics.stages.Memo(2))
        runs.append(topics.fit(docs, embeddings=vectors, hdbscan_params={"min_cluster_size": 15}))
    first, second = runs
    assert not second.cached["umap"] and not second.cached["clustering"]
    assert np.array_equal(first.reduced, second.reduced) and first.topics == second.topics
    check_run(first, docs)


@pytest.mark.slow
def test_text_generation_label_with_smollm2(fast_run):
    table = topics.compare_representations(
        fast_run, kinds=("generation",), generator=topics.SMOLLM2, generation_topics=1
    )
    column = "Text generation (SmolLM2-135M-Instruct)"
    assert table[column].iloc[0].strip() and table[column].iloc[0] != "…"
    assert (table[column].iloc[1:] == "…").all()


# -- the tab's API, called with gradio_client (slow: the real corpus) --------------------------------------


@pytest.fixture(scope="module")
def client(wiki_run):
    import gradio as gr
    from gradio_client import Client

    import app
    from tabs import topics as topics_tab
    from tests.conftest import local_settings

    settings = local_settings()
    with gr.Blocks() as demo:
        topics_tab.build(demo, settings)
    url = app.serve(demo, settings, block=False)
    yield Client(url, verbose=False)
    demo.close()


@pytest.mark.slow
def test_api_fit_search_and_representations(client, wiki_run):
    corpus, run = wiki_run
    fitted = client.predict("wikipedia", 15, 50, None, None, api_name="/topics_fit")
    assert fitted["n_topics"] == run.n_topics and fitted["cached"]["umap"]  # the UMAP of wiki_run
    assert {"Topic", "Count", "Name", "Representation"} <= set(fitted["topics"][0])
    assert [row["Count"] for row in fitted["topics"]] == run.info["Count"].tolist()
    assert fitted["agreement"] == topics.agreement(run.topics, corpus.labels)
    assert (fitted["collapse"] is None) == (topics.detect_collapse(run) is None)
    found = client.predict("football", 3, api_name="/topics_search")
    assert len(found) == 3 and found[0]["similarity"] >= found[1]["similarity"]
    table = client.predict(["keybert", "mmr"], 0.3, 3, api_name="/topics_representations")
    assert len(table) == 3 and {"Original", "KeyBERTInspired", "MMR (diversity 0.3)"} <= set(table[0])
    with pytest.raises(Exception, match="hf download MaartenGr/arxiv_nlp"):
        client.predict("arxiv_nlp", api_name="/topics_fit")
    # The slider's bound comes first: the API takes no more than the page can send.
    with pytest.raises(Exception, match="min_cluster_size must be a whole number between 2 and 500"):
        client.predict("wikipedia", 15, 20_000, api_name="/topics_fit")


# -- stability: why topics move (UMAP + HDBSCAN for real, on the four themes plus scattered noise) ---------


@pytest.fixture(scope="module")
def noisy_run(themes):
    """The four themes and 12 scattered documents (outliers for HDBSCAN), through real UMAP and HDBSCAN."""
    rng = np.random.default_rng(1)
    noise = [f"misc {' '.join(rng.choice(['alpha', 'beta', 'gamma', 'delta'], size=6))}" for _ in range(12)]
    vectors = np.vstack([themes["embeddings"], rng.normal(scale=4.0, size=(12, 32)).astype(np.float32)])
    labels = [*themes["labels"], *["noise"] * 12]
    run = topics.fit(
        [*themes["docs"], *noise],
        embeddings=vectors,
        umap_params={"n_neighbors": 10},
        hdbscan_params={"min_cluster_size": 10},
        seed=11,  # a seed of its own: these tests count the UMAP runs
    )
    return run, labels


@pytest.mark.slow
def test_the_sweep_reruns_only_hdbscan_on_the_cached_umap(noisy_run):
    run, labels = noisy_run
    umaps = topics.STAGE_RUNS["umap"]
    points = topics.sweep_min_cluster_size(run, labels, sizes=(5, 10, 40, 500))
    assert topics.STAGE_RUNS["umap"] == umaps  # no UMAP: the sweep reused the run's map
    assert [p.min_cluster_size for p in points] == [5, 10, 40]  # 500 > the 212 documents: left out
    own = next(p for p in points if p.min_cluster_size == 10)
    assert own.n_topics == run.n_topics and own.outlier_share == pytest.approx(run.outlier_share)
    assert all(p.nmi is not None and 0 <= p.nmi <= 1 for p in points)
    assert points[0].n_topics >= points[-1].n_topics  # smaller groups allowed: at least as many topics
    figure = topics.stability_sweep(points)
    assert [trace.name for trace in figure.data] == ["topics", "outlier share", "NMI with the labels"]
    from lab.topics import view

    assert "this run uses 10" in view.sweep_markdown(points, 10)
    from lab import export, snippets

    files = export.stability_files("sweep", figure=figure, data=points)
    assert sorted(Path(f).suffix for f in files) == [".json", ".png", ".svg"]
    assert json.loads(Path(files[-1]).read_text())[0]["min_cluster_size"] == 5
    code = snippets.topic_stability("run = topics.fit_corpus(corpus, settings)\n", "sweep")
    assert code.startswith("run = topics.fit_corpus") and "result = topics.sweep_min_cluster_size(run" in code


@pytest.mark.slow
def test_three_umap_seeds_cost_two_umaps_and_report_their_agreement(noisy_run):
    run, _ = noisy_run
    umaps = topics.STAGE_RUNS["umap"]
    agreement = topics.seed_agreement(run, seeds=(11, 12, 13))
    assert topics.STAGE_RUNS["umap"] == umaps + 2  # seed 11 is the run's own, from the cache
    assert [r.seed for r in agreement.runs] == [11, 12, 13]
    assert set(agreement.ari) == {(11, 12), (11, 13), (12, 13)}
    assert agreement.runs[0].n_topics == run.n_topics
    assert agreement.mean_ari > 0.5  # four well-separated themes: the seeds mostly agree
    from lab.topics import view

    table = view.seeds_table(agreement)
    assert len(table) == 6 and "ARI" in view.seeds_markdown(agreement)


@pytest.mark.slow
def test_outlier_strategies_side_by_side_start_from_the_same_outliers(noisy_run):
    run, labels = noisy_run
    # PCA keeps the scattered documents apart (UMAP pulls them into the themes): HDBSCAN calls them
    # outliers, and every strategy starts from those.
    run = topics.fit(
        run.docs, embeddings=run.embeddings, reduction="pca", hdbscan_params={"min_cluster_size": 10}
    )
    rows = topics.compare_outlier_strategies(run, labels)
    assert [r.strategy for r in rows] == ["c-tf-idf", "embeddings", "distributions"]
    before = int((np.asarray(run.topics) == -1).sum())
    assert before > 0 and all(r.outliers_before == before for r in rows)
    assert all(0 <= r.outliers_after <= before for r in rows)
    by_name = {r.strategy: r for r in rows}
    # the nearest topic by cosine similarity, for every outlier whose best similarity is above 0
    assert 0 < by_name["embeddings"].moved <= before
    from lab.topics import view

    assert list(view.outliers_table(rows)["moved into topics"]) == [r.moved for r in rows]


# -- a fit's files belong to the student who made it (two logins; after the stability tests, so that UMAP
# is compiled already) --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_fits_downloads_are_served_to_its_student_only(noisy_run, themes, isolated):
    from urllib.parse import urljoin

    import gradio as gr
    import httpx

    import app
    from tabs import topics as topics_tab
    from tests.helpers import local_settings, page_event

    logins = {"ada": "ada-pw", "bob": "bob-pw"}
    settings = local_settings(auth=list(logins.items()))
    with gr.Blocks() as demo:
        topics_tab.build(demo, settings)
    url = app.serve(demo, settings, block=False)
    try:
        ada, bob = (
            httpx.post(f"{url}login", data={"username": u, "password": p}, timeout=30).cookies
            for u, p in logins.items()
        )
        corpus = "\n".join(themes["docs"]).encode()
        sent = httpx.post(
            f"{url}gradio_api/upload", files=[("files", ("themes.txt", corpus))], cookies=ada, timeout=30
        )
        [path] = sent.json()
        fitted = page_event(url, ada, "topics-fit", values={
            "topics-corpus": "upload",
            "topics-upload": {"path": path, "orig_name": "themes.txt", "meta": {"_type": "gradio.FileData"}},
            "topics-embedding-model": TINY,
            "topics-clustering": "kmeans",
        })  # fmt: skip
        downloads = {Path(f["path"]).name: f["url"] for f in fitted["topics-downloads"]}
        assert sorted(downloads) == ["document_topics.csv", "topics.csv"]
        for name, address in downloads.items():
            mine = httpx.get(urljoin(url, address), cookies=ada, timeout=30)
            assert mine.status_code == 200 and "topic" in mine.text.splitlines()[0].lower(), name
            refused = httpx.get(urljoin(url, address), cookies=bob, timeout=30)
            assert refused.status_code == 403 and "not yours" in refused.json()["detail"], name
    finally:
        demo.close()
