"""lab.clip and its loader: search, zero-shot, the book's matrix, uploads and bad input.

Most tests use the tiny random open_clip model of ``lab.testing`` through the lab's real loading path.
Random weights check the plumbing (shapes, caching, ranking mechanics, messages), not CLIP's quality;
the names of those tests say ``tiny_random_clip``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image

from lab import catalog, clip, models, testing
from lab.cache import CACHE
from lab.catalog import ModelUnavailable
from lab.errors import InputError

BOOK = Path(__file__).resolve().parent.parent / "assets" / "book" / "images"
GALLERY = Path(__file__).resolve().parent.parent / "assets" / "gallery"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return testing.write_open_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No LAB_MODEL_DIR and an empty Hugging Face cache: what a fresh offline laptop has."""
    folder = tmp_path / "hf-hub-cache"
    folder.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))
    monkeypatch.delenv("LAB_MODEL_DIR", raising=False)
    return folder


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty LAB_CACHE_DIR, so that embeddings on disk are counted from zero."""
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "lab-cache"))
    return tmp_path / "lab-cache"


@pytest.fixture
def model(tiny_folder: Path) -> clip.ClipModel:
    return clip.load(tiny_folder)


def png(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


# -- loading -----------------------------------------------------------------------------------------


def test_tiny_random_clip_loads_once_through_the_cache_and_describes_itself(tiny_folder: Path) -> None:
    first = clip.load(str(tiny_folder))
    second = clip.load(f"local-dir:{tiny_folder}")
    assert first == second
    assert (first.embed_dim, first.image_size, first.context_length) == (16, 32, 77)
    assert first.source == f"folder {tiny_folder}" and first.device == "cpu" and first.dtype == "float32"
    assert first.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)  # open_clip's initial temperature
    entry = {s.key: s for s in CACHE.stats()}[f"{tiny_folder}#clip@cpu@{tiny_folder}"]
    assert entry.misses == 1 and entry.hits >= 1


def test_tiny_random_clip_loads_under_the_default_id_from_lab_model_dir(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(tiny_folder, tmp_path / catalog.slug(clip.DEFAULT_MODEL))
    monkeypatch.setenv("LAB_MODEL_DIR", str(tmp_path))
    model = clip.load()
    assert model.name == clip.DEFAULT_MODEL and model.path is None
    assert model.source.startswith("LAB_MODEL_DIR:") and model.title == "CLIP ViT-B/32 (LAION-2B)"
    CACHE.evict(f"{clip.DEFAULT_MODEL}#clip@cpu")


@pytest.mark.parametrize("model_id", clip.MODELS)
def test_missing_clip_weights_say_which_model_its_size_and_the_command(
    empty_hub: Path, model_id: str
) -> None:
    with pytest.raises(ModelUnavailable) as raised:
        clip.load(model_id)
    message = str(raised.value)
    entry = catalog.CATALOG[model_id]
    assert entry.kind == "clip" and entry.title in message
    assert f"({entry.download_mb:.0f} MB)" in message
    assert f"hf download {model_id} --local-dir" in message and "LAB_MODEL_DIR" in message


def test_every_catalog_clip_has_an_open_clip_tag_that_open_clip_knows() -> None:
    import open_clip

    assert set(clip.MODELS) == {m for m, e in catalog.CATALOG.items() if e.kind == "clip"}
    for model_id in clip.MODELS:
        arch, tag = catalog.OPEN_CLIP[model_id]
        assert open_clip.get_pretrained_cfg(arch, tag), (arch, tag)
    assert catalog.OPEN_CLIP[clip.BOOK_MODEL] == ("ViT-B-32", "openai")


def test_a_folder_that_is_no_clip_or_has_no_safetensors_is_explained(
    tmp_path: Path, tiny_folder: Path
) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(ModelUnavailable, match="holds no CLIP the lab can read"):
        clip.load(tmp_path / "notes")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "open_clip_config.json").write_text(
        (tiny_folder / "open_clip_config.json").read_text()
    )
    (tmp_path / "bin" / "open_clip_pytorch_model.bin").write_bytes(b"pickled weights are never loaded")
    with pytest.raises(ModelUnavailable, match="no .safetensors weights"):
        clip.load(tmp_path / "bin")
    with pytest.raises(ModelUnavailable, match="does not exist"):
        clip.load(tmp_path / "nowhere")


def _tiny_transformers_clip(folder: Path) -> torch.nn.Module:
    """A tiny random transformers ``CLIPModel``, saved as ``openai/clip-vit-base-patch32`` is on the Hub."""
    from transformers import CLIPConfig, CLIPModel

    tower = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": 49408, "max_position_embeddings": 77},
        vision_config={**tower, "image_size": 32, "patch_size": 16},
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    return model


def _features(output: object) -> torch.Tensor:
    return output if torch.is_tensor(output) else output.pooler_output  # transformers 5 may wrap it


def test_tiny_random_clip_in_transformers_format_is_converted_to_the_same_maths(tmp_path: Path) -> None:
    reference = _tiny_transformers_clip(tmp_path / "hf-clip")
    image = Image.open(BOOK / "car.png").convert("RGB")
    with models.clip_model(clip.BOOK_MODEL, path=tmp_path / "hf-clip") as loaded, torch.no_grad():
        pixels = loaded.inputs.preprocess(image).unsqueeze(0)  # (1, 3, 32, 32)
        ids = loaded.inputs.tokenizer(["a supercar on the road", "a puppy"])  # (2, 77)
        ours_image, ours_text = loaded.net.encode_image(pixels), loaded.net.encode_text(ids)
        theirs_image = _features(reference.get_image_features(pixel_values=pixels))
        theirs_text = _features(reference.get_text_features(input_ids=ids))
        assert float(loaded.net.logit_scale) == pytest.approx(float(reference.logit_scale))
    assert torch.allclose(ours_image, theirs_image, atol=1e-5)
    assert torch.allclose(ours_text, theirs_text, atol=1e-5)


def test_tiny_random_clip_from_the_books_hub_cache_loads_offline(tmp_path: Path, empty_hub: Path) -> None:
    """A reader who ran the book's notebook has openai/clip-vit-base-patch32 in transformers format cached."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hub / "models--openai--clip-vit-base-patch32"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    _tiny_transformers_clip(repo / "snapshots" / commit)
    model = clip.load(clip.BOOK_MODEL)
    assert model.source == "Hugging Face cache" and model.embed_dim == 16
    CACHE.evict(f"{clip.BOOK_MODEL}#clip@cpu")


# -- search ------------------------------------------------------------------------------------------


def test_tiny_random_clip_indexes_the_default_gallery_and_answers_text_and_image_queries(
    model: clip.ClipModel,
) -> None:
    gallery = clip.default_gallery()
    names = [name for name, _ in gallery]
    assert names[:3] == ["puppy.png", "cat.png", "car.png"] and len(names) == 17
    index = clip.ImageIndex.build(gallery, model)
    assert len(index) == 17 and index.problems == [] and index.vectors.shape == (17, 16)
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)
    found = index.search_text("a cat", k=5)
    assert len(found) == 5 and {i for i, _ in found} <= set(names)
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert found == index.top(index.text_scores("a cat"), 5)
    for query in (
        GALLERY / "coffee.jpg",
        Image.open(GALLERY / "coffee.jpg"),
        (GALLERY / "coffee.jpg").read_bytes(),
    ):
        best, score = index.search_image(query, k=3)[0]
        assert best == "coffee.jpg" and score == pytest.approx(1.0, abs=1e-5)  # the identical image is first
    assert len(index.search_text("a cat", k=100)) == 17  # k beyond the gallery gives the whole gallery


def test_tiny_random_clip_embeddings_are_kept_on_disk_by_model_and_image_content(
    cache_dir: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    model = clip.load(tiny_folder)
    images = [(name, path) for name, path in clip.default_gallery()[:4]]
    assert clip.ImageIndex.build(images, model).computed == 4
    assert clip.ImageIndex.build(images, model).computed == 0  # a restart or another user: read from disk
    assert len(list((cache_dir / "clip-embeddings" / model.key).rglob("*.npy"))) == 4
    # The key is the pixels, not the file: the same puppy as lossless bytes under another id is known.
    renamed = clip.ImageIndex.build([("my dog", png(Image.open(BOOK / "puppy.png")))], model)
    assert renamed.computed == 0
    other = clip.load(testing.write_open_clip(tmp_path / "other-clip", image_size=48))
    assert other.key != model.key
    assert clip.ImageIndex.build(images, other).computed == 4  # another model embeds for itself


def test_search_ranks_exactly_like_a_full_sort_and_refuses_k_below_one() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = clip.ImageIndex([f"img{i}" for i in range(500)], vectors)
    query = vectors[123]
    expected = np.argsort(-(vectors @ query), kind="stable")[:10]
    assert [i for i, _ in index.search_vector(query, 10)] == [f"img{i}" for i in expected]
    assert index.search_vector(query, 1)[0] == ("img123", pytest.approx(1.0, abs=1e-6))
    with pytest.raises(ValueError, match="at least one result"):
        index.search_vector(query, 0)
    with pytest.raises(ValueError, match="built from vectors alone"):
        index.search_text("a cat")


def test_faiss_backend_says_what_to_install_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_faiss(name: str, *args: object, **kwargs: object) -> object:
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    vectors = np.eye(4, dtype=np.float32)
    index = clip.ImageIndex(list("abcd"), vectors, backend="faiss")
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        index.search_vector(vectors[2], 1)
    assert clip.ImageIndex(list("abcd"), vectors).search_vector(vectors[2], 1)[0][0] == "c"  # auto: exact


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_faiss_backend_finds_the_same_best_image() -> None:
    vectors = unit_rows(2000, 32, seed=1)
    approximate = clip.ImageIndex([str(i) for i in range(2000)], vectors, backend="faiss")
    assert approximate.search_vector(vectors[7], 3)[0][0] == "7"


def test_search_turns_approximate_above_LAB_CLIP_APPROX_ABOVE_and_keeps_exact_cosines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAB_CLIP_APPROX_ABOVE", "300")
    assert clip.approx_above() == 300
    vectors = unit_rows(301, 32, seed=2)
    at_limit = clip.ImageIndex([f"img{i}" for i in range(300)], vectors[:300])
    above = clip.ImageIndex([f"img{i}" for i in range(301)], vectors)
    assert not at_limit.uses_approximate_search() and above.uses_approximate_search()
    assert at_limit._approximate is None  # exact search never builds codes
    assert not clip.ImageIndex(above.ids, vectors, backend="exact").uses_approximate_search()
    found = above.search_vector(vectors[42], 5)
    assert found[0] == ("img42", pytest.approx(1.0, abs=1e-6)) and above._approximate.ntotal == 301
    for image_id, score in found:  # the scores are exact cosines, not the codes' estimates
        assert score == pytest.approx(float(vectors[int(image_id[3:])] @ vectors[42]), abs=1e-6)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    monkeypatch.delenv("LAB_CLIP_APPROX_ABOVE")
    assert clip.approx_above() == clip.APPROX_ABOVE == 50_000


def test_approximate_search_finds_most_of_the_exact_top_10_of_20k_vectors() -> None:
    vectors = unit_rows(20_000, 64, seed=3)
    queries = unit_rows(50, 64, seed=4)  # not in the gallery: no free first hit
    ids = [str(i) for i in range(len(vectors))]
    exact = clip.ImageIndex(ids, vectors, backend="exact")
    approximate = clip.ImageIndex(ids, vectors, backend="faiss")
    recall = np.mean(
        [
            len({i for i, _ in exact.search_vector(q, 10)} & {i for i, _ in approximate.search_vector(q, 10)})
            / 10
            for q in queries
        ]
    )
    assert recall >= 0.9, f"recall@10 {recall:.3f}"


def test_a_saved_index_loads_memory_mapped_and_answers_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_CLIP_APPROX_ABOVE", "1000")
    vectors = unit_rows(3000, 32, seed=5)
    built = clip.ImageIndex([f"img{i}" for i in range(3000)], vectors, problems=["x.gif is not an image."])
    assert built.uses_approximate_search()
    folder = built.save(tmp_path / "index")
    assert {p.name for p in folder.iterdir()} == {"vectors.npy", "ids.json", "codes.faiss", "index.json"}
    loaded = clip.ImageIndex.load(folder)
    assert isinstance(loaded.vectors, np.memmap) and not loaded.vectors.flags.writeable
    assert loaded.uses_approximate_search() and loaded._approximate.ntotal == 3000
    assert loaded.ids == built.ids and loaded.problems == ["x.gif is not an image."]
    for row in (0, 17, 2999):
        assert loaded.search_vector(vectors[row], 8) == built.search_vector(vectors[row], 8)
    small = clip.ImageIndex(["a", "b"], vectors[:2]).save(tmp_path / "small")
    assert not (small / "codes.faiss").exists()
    assert clip.ImageIndex.load(small).search_vector(vectors[1], 1)[0][0] == "b"
    with pytest.raises(InputError, match="holds no saved CLIP index"):
        clip.ImageIndex.load(tmp_path / "nothing here")


# -- zero-shot and the matrix ------------------------------------------------------------------------


def test_tiny_random_clip_zero_shot_sums_to_one_with_the_models_logit_scale(model: clip.ClipModel) -> None:
    labels = ["puppy", "cat", "car"]
    probabilities = clip.zero_shot(BOOK / "puppy.png", labels, model)
    assert list(probabilities) == labels and sum(probabilities.values()) == pytest.approx(1.0)
    result = clip.classify(BOOK / "puppy.png", labels, model, template="a picture of a {label}")
    assert result.prompts == ["a picture of a puppy", "a picture of a cat", "a picture of a car"]
    logits = model.logit_scale * np.array(result.cosines)
    assert result.probabilities == pytest.approx(list(np.exp(logits) / np.exp(logits).sum()))
    assert clip.zero_shot(BOOK / "cat.png", "cat\ndog\n\n", model).keys() == {"cat", "dog"}


def test_tiny_random_clip_similarity_matrix_is_images_by_captions_of_cosines(model: clip.ClipModel) -> None:
    images = [BOOK / name for name in clip.BOOK_CAPTIONS]
    captions = list(clip.BOOK_CAPTIONS.values())[:2]
    matrix = clip.similarity_matrix(images, captions, model)
    assert matrix.shape == (3, 2)
    expected = clip.image_vector(images[1], model) @ model.embed_texts([captions[0]])[0]
    assert matrix[1, 0] == pytest.approx(float(expected), abs=1e-6)


# -- bad input ---------------------------------------------------------------------------------------


def test_empty_query_zero_or_duplicate_labels_and_bad_templates_are_explained(model: clip.ClipModel) -> None:
    index = clip.ImageIndex.build(clip.default_gallery()[:3], model)
    with pytest.raises(ValueError, match="Type what to search for"):
        index.search_text("   ")
    with pytest.raises(ValueError, match="at most 1,000 characters"):
        index.search_text("cat " * 400)
    with pytest.raises(ValueError, match="at least one label"):
        clip.zero_shot(BOOK / "cat.png", [" ", ""], model)
    with pytest.raises(ValueError, match="Cat appears more than once"):
        clip.zero_shot(BOOK / "cat.png", ["cat", "dog", "Cat"], model)
    with pytest.raises(ValueError, match="exactly one {}"):
        clip.zero_shot(BOOK / "cat.png", ["cat", "dog"], model, template="a photo")
    with pytest.raises(ValueError, match="at least one caption"):
        clip.similarity_matrix([BOOK / "cat.png"], [], model)
    with pytest.raises(ValueError, match=r"puppy\.png appear more than once"):
        clip.ImageIndex.build([BOOK / "puppy.png", BOOK / "puppy.png"], model)


def test_an_empty_gallery_or_one_of_only_bad_files_is_explained(model: clip.ClipModel) -> None:
    with pytest.raises(clip.EmptyGallery, match="The gallery is empty"):
        clip.ImageIndex.build([], model)
    with pytest.raises(clip.EmptyGallery, match="notes.txt is not an image"):
        clip.ImageIndex.build([("notes.txt", b"just text")], model)


def test_tiny_random_clip_indexes_the_good_images_of_an_awkward_upload_and_names_the_bad(
    model: clip.ClipModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_MAX_IMAGE_PIXELS", "5000000")
    ramp = Image.fromarray(np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16))
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0] * 256)
    gif = io.BytesIO()
    frames = [Image.new("RGB", (20, 20), colour) for colour in ("red", "blue")]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    upload = {
        "notes.txt": b"not an image",
        "cut.jpg": png(Image.new("RGB", (64, 64), "red"), "JPEG")[:200],
        "bomb.png": png(Image.new("L", (3000, 2000))),
        "cmyk.jpg": png(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"),
        "deep.png": png(ramp),
        "clear.png": png(palette, transparency=0),
        "moving.gif": gif.getvalue(),
        "dot.png": png(Image.new("RGB", (1, 1), "white")),
        "strip.png": png(Image.new("RGB", (4000, 2), "green")),
        "big.png": png(Image.new("RGB", (2048, 1536), "blue")),
    }
    index = clip.ImageIndex.build(upload, model)
    assert index.ids == ["cmyk.jpg", "deep.png", "clear.png", "moving.gif", "dot.png", "strip.png", "big.png"]
    assert [p.split(" ")[0] for p in index.problems] == ["notes.txt", "cut.jpg", "bomb.png"]
    assert "is not an image" in index.problems[0] and "damaged or truncated" in index.problems[1]
    assert "3000×2000 = 6,000,000 pixels" in index.problems[2]
    notes = " ".join(index.notes)
    for expected in ("CMYK", "16-bit", "transparency", "first frame", "only 1×1 pixels", "the middle 8×2"):
        assert expected in notes, expected
    assert clip.prepare_image(upload["big.png"]).image.size == (1024, 768)  # shrunk, aspect kept


def test_uploads_of_files_and_zips_are_capped_with_clear_messages(tmp_path: Path) -> None:
    files = []
    for n in range(4):
        path = tmp_path / f"photo{n}.png"
        path.write_bytes(png(Image.new("RGB", (8, 8), (n * 60, 0, 0))))
        files.append(path)
    archive = tmp_path / "holiday.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("beach/sea.png", png(Image.new("RGB", (8, 8), "blue")))
        zipped.writestr("__MACOSX/beach/._sea.png", b"resource fork")
        zipped.writestr(".DS_Store", b"junk")
        zipped.writestr("beach/", b"")
        zipped.writestr("zeros.png", bytes(3_000_000))  # compresses to almost nothing: a small zip bomb
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    limits = clip.UploadLimits(max_images=3, max_bytes=10_000, max_file_bytes=1_000_000)
    taken, problems = clip.read_uploads([tmp_path / "broken.zip", archive, *files], limits)
    assert [name for name, _ in taken] == ["beach/sea.png", "photo0.png", "photo1.png"]
    assert problems == [
        "broken.zip is not a zip file the lab can read (damaged, or cut short).",
        "zeros.png is over 1.0 MB; each image may be at most that.",
        "The gallery takes 3 more images at most; the last 2 were not added.",
    ]
    small = clip.UploadLimits(max_images=10, max_bytes=150, max_file_bytes=1_000_000)
    taken, problems = clip.read_uploads(files, small)
    assert len(taken) < 4 and "would hold more than" in problems[0]


# -- under the hood ----------------------------------------------------------------------------------


def test_clip_tokens_are_the_books_without_any_weights(empty_hub: Path) -> None:
    tokens = clip.clip_tokens("a puppy playing in the snow", clip.DEFAULT_MODEL)
    assert tokens.tokens == [
        "<|startoftext|>",
        "a</w>",
        "puppy</w>",
        "playing</w>",
        "in</w>",
        "the</w>",
        "snow</w>",
        "<|endoftext|>",
    ]
    assert tokens.ids[0] == 49406 and tokens.ids[-1] == 49407 and tokens.context_length == 77
    assert not tokens.truncated
    long = clip.clip_tokens("word " * 100, clip.BOOK_MODEL)
    assert long.truncated and len(long.ids) == 77 and long.tokens[-1] == "<|endoftext|>"


def test_the_image_as_the_model_sees_it_is_the_centre_at_224_without_any_weights(empty_hub: Path) -> None:
    wide = Image.new("RGB", (600, 200), "red")
    wide.paste(Image.new("RGB", (200, 200), (0, 200, 0)), (200, 0))  # green in the middle third
    seen = clip.preprocessed_image(png(wide), clip.DEFAULT_MODEL)
    assert seen.size == (224, 224)
    red, green, _ = seen.getpixel((112, 112))
    assert green > 190 and red < 10  # resized so the short side is 224, then the centre kept
    assert clip.preprocessed_image(BOOK / "car.png", clip.SMALL_MODEL).size == (256, 256)


def test_tiny_random_clip_preprocess_is_the_same_with_and_without_its_weights(
    model: clip.ClipModel, tiny_folder: Path
) -> None:
    image = Image.open(BOOK / "cat.png").convert("RGB")
    with model.lease() as loaded:
        with_weights = loaded.inputs.preprocess(image)
    without = models.clip_inputs(str(tiny_folder), tiny_folder).preprocess(image)
    assert torch.equal(with_weights, without)
    config = json.loads((tiny_folder / "open_clip_config.json").read_text())
    assert (
        clip.preprocessed_image(image, model).size == (config["model_cfg"]["vision_cfg"]["image_size"],) * 2
    )


@pytest.fixture(autouse=True)
def _no_leftover_leases() -> Iterator[None]:
    yield
    assert all(s.leases == 0 for s in CACHE.stats()), "a test left a model leased"


# -- the galleries an app serves ---------------------------------------------------------------------


def test_a_readers_gallery_keeps_their_images_under_unique_ids_and_refuses_more_than_its_cap(
    tmp_path: Path,
) -> None:
    photo = tmp_path / "car.png"
    photo.write_bytes(png(Image.new("RGB", (40, 30), "red")))
    (tmp_path / "notes.txt").write_text("not a picture")
    mine = clip.Gallery()
    added = mine.add([photo, tmp_path / "notes.txt"], clip.UploadLimits(max_images=2))
    assert added.count == 1 and "notes.txt is not an image" in added.problems[0]
    assert [name for name, _ in mine.uploads] == ["car (2).png"]  # the default gallery has a car.png
    assert list(mine.paths())[-1] == "car (2).png" and len(mine.paths()) == 18
    mine.add([photo], clip.UploadLimits(max_images=2))
    with pytest.raises(InputError, match="already holds 2 added images"):
        mine.add([photo], clip.UploadLimits(max_images=2))
    folder = Path(mine.folder)
    mine.delete()
    assert not folder.exists() and mine.uploads == [] and clip.gallery_paths(mine) == clip.gallery_paths(None)


def test_tiny_random_clip_galleries_build_the_default_index_once_for_concurrent_readers(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    builds = []
    real_build = clip.ImageIndex.build

    def counted(*args: object, **kwargs: object) -> clip.ImageIndex:
        builds.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(clip.ImageIndex, "build", counted)
    galleries = clip.Galleries()
    with ThreadPoolExecutor(4) as pool:
        models_seen = list(pool.map(lambda _: galleries.model(str(tiny_folder)), range(4)))
        indexes = list(pool.map(lambda _: galleries.default_index(models_seen[0]), range(4)))
    assert all(m is models_seen[0] for m in models_seen) and all(i is indexes[0] for i in indexes)
    assert len(builds) == 1 and len(indexes[0]) == 17
    photo = tmp_path / "lake.png"
    photo.write_bytes(png(Image.new("RGB", (40, 30), "blue")))
    mine = clip.Gallery()
    mine.add([photo], clip.UploadLimits())
    extended = galleries.index(mine, models_seen[0])
    assert extended.ids[-1] == "lake.png" and len(extended) == 18
    assert galleries.index(mine, models_seen[0]) is extended  # kept until the reader adds more
    assert galleries.index(None, models_seen[0]) is indexes[0]
    galleries.clear()
    assert galleries.default_index(models_seen[0]) is not indexes[0] and len(builds) == 3
    mine.delete()


def test_tiny_random_clip_big_default_gallery_is_saved_beside_its_embeddings_and_mapped_next_time(
    cache_dir: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAB_CLIP_APPROX_ABOVE", "10")  # the 17 images of the default gallery count as big
    model = clip.load(tiny_folder)
    first = clip.Galleries().default_index(model)
    assert first.uses_approximate_search() and first.computed == 17
    assert isinstance(first.vectors, np.memmap)  # what was built is served from disk
    saved = list((cache_dir / "clip-embeddings" / model.key / "indexes").glob("*/index.json"))
    assert len(saved) == 1 and (saved[0].parent / "codes.faiss").is_file()
    again = clip.Galleries().default_index(model)  # a restart: nothing embedded, nothing opened
    assert again.computed == 0 and again.ids == first.ids and again.uses_approximate_search()
    assert again.search_image(GALLERY / "coffee.jpg", k=3)[0] == ("coffee.jpg", pytest.approx(1.0, abs=1e-5))
    assert again.search_text("a cat", k=5) == first.search_text("a cat", k=5)
    # A reader's upload is ranked exactly beside the shared codes, which are not rebuilt.
    photo = tmp_path / "noise.png"
    photo.write_bytes(png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8))))
    mine = clip.Gallery()
    mine.add([photo], clip.UploadLimits())
    galleries = clip.Galleries()
    extended = galleries.index(mine, model)
    assert extended._approximate is galleries.default_index(model)._approximate and len(extended) == 18
    assert extended.search_image(mine.uploads[0][1], k=2)[0] == ("noise.png", pytest.approx(1.0, abs=1e-5))
    mine.delete()
    with pytest.raises(InputError, match="built with another CLIP"):
        clip.ImageIndex.load(
            saved[0].parent, clip.load(testing.write_open_clip(tmp_path / "other", image_size=48))
        )


def test_a_classroom_server_only_takes_catalog_clips() -> None:
    assert clip.chosen_model(None) == clip.DEFAULT_MODEL
    assert clip.chosen_model(clip.BOOK_MODEL, " ~/clip ") == "~/clip"
    assert clip.chosen_model(clip.BOOK_MODEL, "", classroom=True) == clip.BOOK_MODEL
    with pytest.raises(InputError, match="not local folders"):
        clip.chosen_model(clip.BOOK_MODEL, "/models/clip", classroom=True)
    with pytest.raises(InputError, match="someone/clip is not one"):
        clip.chosen_model("someone/clip", classroom=True)


def test_every_error_a_reader_can_cause_is_the_labs_own() -> None:
    index = clip.ImageIndex(list("ab"), np.eye(2, dtype=np.float32))
    for bad in (
        lambda: clip.check_query(" "),
        lambda: clip.check_labels([]),
        lambda: clip.check_template("no slot"),
        lambda: index.search_vector(np.ones(2, np.float32), 0),
        lambda: clip.parse_name(" "),
    ):
        with pytest.raises(InputError):
            bad()


def test_the_zero_shot_table_lists_the_most_probable_label_first() -> None:
    from lab.clip import view

    result = clip.ZeroShot(["cat", "dog"], ["a cat", "a dog"], [0.1, 0.3], [0.12, 0.88], 10.0)
    table = view.zero_shot_table(result)
    assert table.index("dog") < table.index("cat") and "88.0%" in table and "3.00" in table
    assert list(view.zero_shot_frame(result)["label"]) == ["cat", "dog"]
    assert clip.clip_probabilities([0.1, 0.3], 10.0) == pytest.approx([0.11920292, 0.88079708])
