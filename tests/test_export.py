"""Export: each tab's figures as PNG and SVG, tables as CSV and result as JSON, from small made-up results.

No model runs here: the exporters take the results the tabs already hold, so these build those results
from numbers and check that every file is written and parses (a PNG header, SVG that is XML with drawn
shapes, CSV rows, JSON with the result's keys).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from lab import attention_view, export, tokens
from lab.attention import AttentionResult, NextToken
from lab.clip.zero_shot import ZeroShot
from lab.embeddings import StaticVsContextual
from lab.finetune import view as finetune_view
from lab.tokens import Tokenization
from tests.helpers import SVG_NAMESPACE, by_suffix, check_figures, rows


@pytest.fixture
def attention_result() -> AttentionResult:
    rng = np.random.default_rng(0)
    weights = rng.random((2, 3, 4, 4)).astype(np.float32)
    weights /= weights.sum(-1, keepdims=True)
    return AttentionResult(
        "tiny", ["[CLS]", "the", "cat", "[SEP]"], weights, [True, False, False, True], False
    )


def test_tokenizer_export_writes_the_statistics_and_tokens_csv_and_json():
    result = Tokenization(
        "gpt2", tokens=["Hello", " world"], ids=[15496, 995], vocab_size=50257, method="BPE"
    )
    files = by_suffix(export.tokenizer_files([result], (["tokenizer", "tokens"], [["gpt2", 2]])))
    tables = {p.stem.split("-", 1)[1]: rows(p) for p in files[".csv"]}
    assert tables["tokens"] == [["tokenizer", "position", "token", "id"], ["gpt2", "0", "Hello", "15496"],
                                ["gpt2", "1", " world", "995"]]  # fmt: skip
    assert tables["statistics"][1] == ["gpt2", "2"]
    assert json.loads(files[".json"][0].read_text())[0]["tokens"] == ["Hello", " world"]


def test_boundary_and_chat_template_exports_list_every_cut_and_token():
    first = Tokenization("gpt2", tokens=["Hello", " world"], ids=[15496, 995])
    second = Tokenization("bert", tokens=["hello", "world"], ids=[7592, 2088])
    cut = tokens.Boundaries(both=[0], only_a=[5], only_b=[6])
    files = by_suffix(export.boundaries_files("Hello world", first, second, cut))
    assert rows(files[".csv"][0]) == [["offset", "character", "token starts in"], ["0", "H", "both"],
                                      ["5", " ", "gpt2"], ["6", "w", "bert"]]  # fmt: skip
    assert json.loads(files[".json"][0].read_text())["only_b"] == [6]
    chat = tokens.ChatRendering("smol", "<|im_start|>user\nHi", ["<|im_start|>", "user", "\n", "Hi"],
                                [1, 4093, 198, 17830], [True, False, False, False])  # fmt: skip
    files = by_suffix(export.chat_files([chat]))
    table = rows(files[".csv"][0])
    assert table[1] == ["smol", "0", "<|im_start|>", "1", "True"] and len(table) == 1 + 4
    assert json.loads(files[".json"][0].read_text())[0]["text"] == chat.text


def test_attention_export_draws_the_head_view_and_the_model_view_as_png_and_svg(attention_result):
    files = by_suffix(export.attention_files(attention_result, layer=1))
    check_figures(files, 3)  # head view of layer 1, one head's heat map, the model view grid
    names = sorted(p.stem for p in files[".svg"])
    assert names == ["attention-head-view-layer-1", "attention-layer-0-head-0", "attention-model-view"]
    grid = ET.parse(next(p for p in files[".svg"] if p.stem.endswith("model-view"))).getroot()
    assert len(grid.findall(f"{SVG_NAMESPACE}g")) == 2 * 3  # one group per layer and head
    data = json.loads(files[".json"][0].read_text())
    assert set(data) == {"model", "tokens", "causal", "weights"}
    assert np.asarray(data["weights"]).shape == (2, 3, 4, 4)


def test_next_token_export_has_the_chart_the_top_k_table_and_the_result():
    result = NextToken([" Paris", " the"], [7042, 260], [0.77, 0.07], [0.9, 0.1], [True, True], " Paris", 2)
    figure = attention_view.next_token_figure(result, 0.7, 0.9)
    asked = {"model": "m", "prompt": "The capital of France is", "k": 2, "temperature": 0.7, "top_p": 0.9}
    files = by_suffix(export.next_token_files(result, figure, asked))
    check_figures(files, 1)
    table = rows(files[".csv"][0])
    assert table[0][0] == "token" and table[1][:3] == [" Paris", "7042", "0.77"]
    data = json.loads(files[".json"][0].read_text())
    assert data["tokens"][0] == " Paris" and data["temperature"] == 0.7


def test_logit_lens_export_has_one_row_per_layer_and_position():
    lens = [[[("a", 0.1)], [("b", 0.2)]], [[("c", 0.3)], [("Paris", 0.8)]]]
    files = by_suffix(export.logit_lens_files(lens, ["The", " capital"]))
    table = rows(files[".csv"][0])
    assert len(table) == 1 + 4 and table[-1] == ["1", "1", " capital", "Paris", "0.8"]
    assert set(json.loads(files[".json"][0].read_text())) == {"tokens", "rows"}


def test_structure_export_keeps_the_tree_and_its_numbers():
    from lab.attention import Structure

    tree = "LlamaForCausalLM (134,515,008)\n  model: LlamaModel (134,515,008)"
    files = by_suffix(export.structure_files(Structure(tree, 134_515_008, 49152, 576, 30, 9, 3), "smollm2"))
    data = json.loads(files[".json"][0].read_text())
    assert data["tree"] == tree and data["parameters"] == 134_515_008 and data["kv_heads"] == 3


def test_similarity_export_has_the_heatmap_and_the_matrix():
    sentences = ["bread", "loaf", "stocks"]
    matrix = np.array([[1, 0.8, 0.1], [0.8, 1, 0.2], [0.1, 0.2, 1]])
    figure = attention_view.matrix_heatmap(matrix, sentences, "Cosine similarity")
    files = by_suffix(export.similarity_files(sentences, matrix, figure, "minilm"))
    check_figures(files, 1)
    assert rows(files[".csv"][0])[0] == ["", *sentences] and rows(files[".csv"][0])[2][1] == "0.8"
    assert json.loads(files[".json"][0].read_text())["cosine"][0][1] == 0.8


def test_embedding_map_export_has_the_map_and_every_points_coordinates():
    labels = ["king", "queen", "apple", "banana"]
    points = np.array([[1.5, -0.25], [1.25, -0.5], [-2.0, 1.0], [-2.125, 0.75]], dtype=np.float32)
    figure = attention_view.scatter(points, labels, "4 static token embeddings · PCA")
    asked = {"model": "minilm", "projection": "pca", "mapped": "tokens"}
    files = by_suffix(export.embedding_map_files(labels, points, figure, asked))
    check_figures(files, 1)
    table = rows(files[".csv"][0])
    assert table[0] == ["label", "x", "y"] and [r[0] for r in table[1:]] == labels
    assert np.array([[float(x), float(y)] for _, x, y in table[1:]]) == pytest.approx(points, abs=1e-5)
    data = json.loads(files[".json"][0].read_text())
    assert data["labels"] == labels and data["projection"] == "pca"
    assert np.asarray(data["points"]) == pytest.approx(points, abs=1e-5)


def test_neighbours_export_ranks_the_tokens_with_their_cosines():
    pairs = [("queen", 0.6712345), ("prince", 0.5)]
    files = by_suffix(export.neighbours_files("king", "minilm", pairs))
    assert rows(files[".csv"][0]) == [
        ["rank", "token", "cosine"],
        ["1", "queen", "0.67123"],
        ["2", "prince", "0.5"],
    ]
    data = json.loads(files[".json"][0].read_text())
    assert data["token"] == "king" and data["neighbours"][0] == [1, "queen", 0.67123]


def test_static_vs_contextual_export_has_both_heat_maps_and_both_matrices():
    contextual = np.array([[1.0, 0.62, 0.31], [0.62, 1.0, 0.25], [0.31, 0.25, 1.0]])
    result = StaticVsContextual("bank", ["river bank", "bank rates", "the bank"], np.ones((3, 3)), contextual,
                                [["bank"]] * 3)  # fmt: skip
    static_figure, contextual_figure, _ = attention_view.static_vs_contextual(result)
    figures = {"static": static_figure, "contextual": contextual_figure}
    files = by_suffix(export.static_vs_contextual_files(result, figures, "minilm"))
    check_figures(files, 2)
    tables = {p.stem.removeprefix("static-vs-contextual-"): rows(p) for p in files[".csv"]}
    assert tables["contextual"][0] == ["", "1: river bank", "2: bank rates", "3: the bank"]
    assert np.array([r[1:] for r in tables["contextual"][1:]], dtype=float) == pytest.approx(contextual)
    assert {r for row in tables["static"][1:] for r in row[1:]} == {"1.0"}
    data = json.loads(files[".json"][0].read_text())
    assert data["word"] == "bank" and data["contextual"] == contextual.tolist()


def test_clip_matrix_export_has_the_heat_map_and_the_images_by_captions_matrix():
    images, captions = ["puppy.png", "cat.png", "car.png"], ["a puppy", "a cat"]
    matrix = np.array([[0.33, 0.12], [0.1, 0.35], [0.08, 0.09]], dtype=np.float32)
    files = by_suffix(export.clip_matrix_files(matrix, images, captions, "clip"))
    check_figures(files, 1)
    table = rows(files[".csv"][0])
    assert table[0] == ["", *captions] and [r[0] for r in table[1:]] == images
    assert np.array([r[1:] for r in table[1:]], dtype=float) == pytest.approx(matrix, abs=1e-5)
    data = json.loads(files[".json"][0].read_text())
    assert data["images"] == images and np.asarray(data["cosine"]) == pytest.approx(matrix, abs=1e-5)


def test_topic_export_has_the_figures_the_topic_and_document_tables_and_the_assignments():
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    info = pd.DataFrame({"Topic": [-1, 0, 1], "Count": [1, 2, 2], "Name": ["-1_x", "0_bread", "1_cats"]})
    run = SimpleNamespace(
        topics=[0, 0, 1, 1, -1],
        titles=list("abcde"),
        info=info,
        params={"seed": 42},
        n_topics=2,
        outlier_share=0.2,
    )
    bars = make_subplots(rows=1, cols=2)  # BERTopic's bar chart: one subplot per topic
    bars.add_trace(go.Bar(x=[0.3, 0.2], y=["bread", "loaf"], orientation="h"), row=1, col=1)
    bars.add_trace(go.Bar(x=[0.4, 0.1], y=["cat", "nap"], orientation="h"), row=1, col=2)
    heat = go.Figure(go.Heatmap(z=[[1, 0.2], [0.2, 1]], x=["0", "1"], y=["0", "1"]))
    files = by_suffix(export.topic_files(run, info, {"barchart": bars, "heatmap": heat}))
    check_figures(files, 2)
    tables = {p.stem: rows(p) for p in files[".csv"]}
    assert len(tables["topics-documents"]) == 1 + 5 and tables["topics-topics"][0] == [
        "Topic",
        "Count",
        "Name",
    ]
    data = json.loads(files[".json"][0].read_text())
    assert (
        data["assignments"] == run.topics and data["n_topics"] == 2 and data["topics"][1]["Name"] == "0_bread"
    )


def test_topic_words_search_and_representation_exports_hold_the_tables_numbers():
    from lab import topics

    words = [("football", 0.08123449), ("league", 0.05)]
    chart = by_suffix(export.topic_words_files(3, "3_football_league", words, topics.word_bars(words, "3")))
    check_figures(chart, 1)
    assert rows(chart[".csv"][0])[1:] == [["football", "0.081234"], ["league", "0.05"]]
    assert json.loads(chart[".json"][0].read_text())["name"] == "3_football_league"
    found = by_suffix(export.topic_search_files("goals", [(3, 0.61234567, "3_football_league")]))
    assert rows(found[".csv"][0]) == [["topic", "similarity", "name"], ["3", "0.61235", "3_football_league"]]
    assert json.loads(found[".json"][0].read_text())["query"] == "goals"
    table = pd.DataFrame(
        {"Topic": [0, 1], "Original": ["bread | loaf", "cat | nap"], "MMR": ["bread", "cat"]}
    )
    compared = by_suffix(export.representations_files(table, {"kinds": ("mmr",), "diversity": 0.2}))
    assert rows(compared[".csv"][0]) == [["Topic", "Original", "MMR"], ["0", "bread | loaf", "bread"],
                                         ["1", "cat | nap", "cat"]]  # fmt: skip
    data = json.loads(compared[".json"][0].read_text())
    assert data["kinds"] == ["mmr"] and data["table"][1]["MMR"] == "cat"


def test_clip_exports_rank_the_search_and_chart_the_zero_shot_probabilities():
    search = by_suffix(export.clip_search_files([("cat.jpg", 0.31), ("dog.jpg", 0.2)], "a cat", "clip"))
    assert rows(search[".csv"][0])[1] == ["1", "cat.jpg", "0.31"]
    assert json.loads(search[".json"][0].read_text())["query"] == "a cat"
    shot = ZeroShot(
        ["puppy", "car"], ["a photo of a puppy.", "a photo of a car."], [0.3, 0.1], [0.9, 0.1], 100.0
    )
    files = by_suffix(export.zero_shot_files(shot, "clip"))
    check_figures(files, 1)
    assert rows(files[".csv"][0])[1][0] == "puppy"
    assert json.loads(files[".json"][0].read_text())["probabilities"] == [0.9, 0.1]


def test_blip2_export_keeps_the_conversation_as_csv_and_json():
    record = {"model": "blip2", "history": [["What is it?", "a car"]], "answer": "a car"}
    files = by_suffix(export.vision_chat_files(record))
    assert rows(files[".csv"][0]) == [["question", "answer"], ["What is it?", "a car"]]
    assert json.loads(files[".json"][0].read_text())["answer"] == "a car"


def test_finetune_export_has_the_loss_curve_with_its_second_axis_and_the_losses():
    snap = {"job_id": "r1", "status": "done", "step": 3, "total_steps": 3, "output_dir": "/secret",
            "losses": [[1, 2.5], [2, 2.1], [3, 1.9]], "eval_losses": [[3, 2.0]],
            "learning_rates": [[1, 1e-3], [2, 5e-4], [3, 0.0]]}  # fmt: skip
    files = by_suffix(export.finetune_files(snap, finetune_view.loss_figure(snap)))
    check_figures(files, 1)
    assert rows(files[".csv"][0])[1:] == [["1", "2.5", ""], ["2", "2.1", ""], ["3", "1.9", "2.0"]]
    data = json.loads(files[".json"][0].read_text())
    assert "output_dir" not in data and data["losses"][0] == [1, 2.5]


def test_old_export_folders_are_removed_when_a_new_one_is_made(tmp_path):
    import os
    import time

    old = export.new_folder(tmp_path)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    new = export.new_folder(tmp_path, keep_s=3600)
    assert new.is_dir() and not old.exists()


def test_results_and_pictures_go_where_the_app_says(tmp_path, monkeypatch):
    from PIL import Image

    made: list[Path] = []

    def folder() -> Path:  # as a served lab's: one new folder per result
        made.append(tmp_path / f"result-{len(made)}")
        made[-1].mkdir()
        return made[-1]

    monkeypatch.setattr(export, "result_folder", folder)
    written = export.write("table", tables={"t": (["a"], [[1]])})
    shown = export.picture(Image.new("RGBA", (4, 3), (255, 0, 0, 128)), "seen")
    assert [Path(p).parent for p in written] == [made[0]] and Path(shown) == made[1] / "seen.png"
    with Image.open(shown) as picture:
        assert (picture.mode, picture.size) == ("RGB", (4, 3))
