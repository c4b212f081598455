"""Topic modelling (chapter 5): embed → UMAP → HDBSCAN → c-TF-IDF with BERTopic, every stage cached.

::

    from lab import topics

    corpus = topics.load_corpus("wikipedia")          # 10,033 lead sections, 12 labels, MiniLM vectors
    run = topics.fit(corpus.docs, titles=corpus.titles, embeddings=corpus.embeddings)
    run.info.head()                                   # BERTopic's get_topic_info()
    run.model.find_topics("football")                 # works: the model always has an embedding model
    topics.agreement(run.topics, corpus.labels)       # NMI and ARI against the 12 Wikipedia topics
    topics.compare_representations(run, corpus.docs)  # c-TF-IDF against KeyBERTInspired and MMR
    topics.documents_map(run).show()                  # plotly; topics.interactive_map(run) for datamapplot

:func:`fit` is BERTopic with the book's defaults (UMAP 5-d, cosine, min_dist 0; HDBSCAN min_cluster_size
50, euclidean, eom), but each stage is computed once for its inputs: embeddings are kept on disk by model
and corpus hash, UMAP in memory by its parameters, so changing an HDBSCAN parameter re-runs only the
clustering and c-TF-IDF. The 2-d layout for the maps is computed when a map first asks for it
(``run.layout()``), so a fit costs what BERTopic's does. :data:`STAGE_RUNS` counts the stages actually
computed.

The modules, in the order of the pipeline: ``settings`` (what :func:`fit` takes), ``corpora`` and
``uploads`` (documents in), ``embedding`` and ``stages`` (the cached stages), ``pipeline`` (:func:`fit`),
``results`` (:class:`TopicRun` and what to ask of it), ``collapse`` (when HDBSCAN's topics collapse: why,
and the setting that undoes it), ``stability`` (why topics move: a min_cluster_size sweep, UMAP seeds,
outlier strategies), ``representations`` (the book's comparison table),
``plots`` and ``datamap`` (pictures), ``runs`` (runs kept for sessions and API callers), ``view``
(what the tab shows) and ``api`` (the tab's web API as plain functions).
"""

from __future__ import annotations

from lab.topics.api import TopicAPI
from lab.topics.collapse import Collapse, Fix, detect_collapse, diagnose, find_fix
from lab.topics.corpora import (
    ARXIV_DATASET,
    CORPORA,
    CORPUS_NAMES,
    MAX_DOCS,
    Corpus,
    clean_documents,
    corpus_hash,
    load_corpus,
    wikipedia_manifest,
)
from lab.topics.datamap import (
    DATAMAP_JS,
    datamap_static,
    interactive_map,
    remote_references,
    save_interactive_map,
)
from lab.topics.embedding import Embedded, embed_documents, encode, lab_embedder
from lab.topics.errors import CorpusUnavailable, TopicInputError
from lab.topics.pipeline import fit, fit_corpus, shipped_embeddings
from lab.topics.plots import (
    MAP_POINTS,
    OUTLIER_COLOUR,
    PALETTE,
    barchart,
    documents_map,
    heatmap,
    hierarchy,
    sample_indices,
    stability_sweep,
    topic_labels,
    word_bars,
)
from lab.topics.representations import (
    BOOK_PROMPT,
    REPRESENTATIONS,
    clean_label,
    compare_representations,
    default_generator,
    generate_label,
)
from lab.topics.results import (
    TopicRun,
    agreement,
    export_document_topics,
    export_topic_table,
    label_crosstab,
    main_labels,
    representative_docs,
    search,
    short_label,
    topic_table,
    topic_words,
)
from lab.topics.runs import RunStore, TopicSession
from lab.topics.settings import (
    EMBEDDING_MODELS,
    FLAN_T5,
    GENERATORS,
    GTE_SMALL,
    HDBSCAN_DEFAULTS,
    MIN_DOCS,
    MINILM,
    OUTLIER_STRATEGIES,
    SMOLLM2,
    UMAP_DEFAULTS,
    Progress,
    TopicSettings,
)
from lab.topics.stability import (
    OutlierStrategy,
    SeedAgreement,
    SweepPoint,
    compare_outlier_strategies,
    seed_agreement,
    sweep_min_cluster_size,
)
from lab.topics.stages import STAGE_RUNS, Clusters, Reduced, clear_caches, cluster, reduce
from lab.topics.uploads import (
    MAX_UPLOAD_BYTES,
    NO_COLUMN,
    corpus_from_form,
    csv_columns,
    decode_upload,
    guess_columns,
    is_csv,
    load_choice,
    read_csv,
    read_text_file,
)

__all__ = [
    # errors
    "CorpusUnavailable",
    "TopicInputError",
    # settings
    "EMBEDDING_MODELS",
    "FLAN_T5",
    "GENERATORS",
    "GTE_SMALL",
    "HDBSCAN_DEFAULTS",
    "MIN_DOCS",
    "MINILM",
    "OUTLIER_STRATEGIES",
    "SMOLLM2",
    "UMAP_DEFAULTS",
    "Progress",
    "TopicSettings",
    # corpora
    "ARXIV_DATASET",
    "CORPORA",
    "CORPUS_NAMES",
    "MAX_DOCS",
    "Corpus",
    "clean_documents",
    "corpus_hash",
    "load_corpus",
    "wikipedia_manifest",
    # uploads
    "MAX_UPLOAD_BYTES",
    "NO_COLUMN",
    "corpus_from_form",
    "csv_columns",
    "decode_upload",
    "guess_columns",
    "is_csv",
    "load_choice",
    "read_csv",
    "read_text_file",
    # embedding
    "Embedded",
    "embed_documents",
    "encode",
    "lab_embedder",
    # stages
    "STAGE_RUNS",
    "Clusters",
    "Reduced",
    "clear_caches",
    "cluster",
    "reduce",
    # pipeline
    "fit",
    "fit_corpus",
    "shipped_embeddings",
    # results
    "TopicRun",
    "agreement",
    "export_document_topics",
    "export_topic_table",
    "label_crosstab",
    "main_labels",
    "representative_docs",
    "search",
    "short_label",
    "topic_table",
    "topic_words",
    # collapse
    "Collapse",
    "Fix",
    "detect_collapse",
    "diagnose",
    "find_fix",
    # stability
    "OutlierStrategy",
    "SeedAgreement",
    "SweepPoint",
    "compare_outlier_strategies",
    "seed_agreement",
    "sweep_min_cluster_size",
    # representations
    "BOOK_PROMPT",
    "REPRESENTATIONS",
    "clean_label",
    "compare_representations",
    "default_generator",
    "generate_label",
    # plots (was lab.topic_plots)
    "MAP_POINTS",
    "OUTLIER_COLOUR",
    "PALETTE",
    "barchart",
    "documents_map",
    "heatmap",
    "hierarchy",
    "sample_indices",
    "topic_labels",
    "stability_sweep",
    "word_bars",
    # datamap (was lab.topic_plots)
    "DATAMAP_JS",
    "datamap_static",
    "interactive_map",
    "remote_references",
    "save_interactive_map",
    # runs
    "RunStore",
    "TopicSession",
    # api
    "TopicAPI",
]
