"""Zero-shot classification and the book's similarity matrix: texts and images compared by cosine.

CLIP was trained to pick, among captions, the one that belongs to an image: the cosines times the model's
logit scale go through a softmax. Any labels can play the captions (*zero-shot*), put into a template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lab.clip.index import image_vector, named_images, vectors_of
from lab.clip.model import ClipModel
from lab.clip.prepare import ImageSource, check_query, prepare_image
from lab.errors import InputError

TEMPLATE = "a photo of a {}."
MAX_LABELS = 100


def check_labels(labels: Sequence[str] | str) -> list[str]:
    """Labels, stripped: a list, or one string with a label per line (or comma-separated).

    Raises:
        InputError: no label, a label given twice, or more than :data:`MAX_LABELS`.
    """
    if isinstance(labels, str):
        labels = labels.splitlines() if "\n" in labels else labels.split(",")
    clean = [label.strip() for label in labels if label and label.strip()]
    if not clean:
        raise InputError("Give at least one label to choose from, e.g. “cat, dog, car”.")
    seen: set[str] = set()
    repeated = sorted({label for label in clean if label.casefold() in seen or seen.add(label.casefold())})
    if repeated:
        raise InputError(f"Each label must be different; {', '.join(repeated)} appears more than once.")
    if len(clean) > MAX_LABELS:
        raise InputError(f"{len(clean)} labels given; the lab takes at most {MAX_LABELS}.")
    for label in clean:
        check_query(label)
    return clean


def check_template(template: str | None) -> str:
    """A prompt template with one ``{}`` (or ``{label}``) where the label goes."""
    text = (template or "").strip().replace("{label}", "{}")
    if text.count("{}") != 1:
        raise InputError(
            f"The template needs exactly one {{}} where the label goes, like “{TEMPLATE}”; got “{text}”."
        )
    return text


def clip_probabilities(cosines: Any, logit_scale: float) -> np.ndarray:
    """CLIP's probabilities over candidates: softmax(logit scale × cosine), float64, summing to 1."""
    logits = logit_scale * np.asarray(cosines, dtype=np.float64)
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


@dataclass(frozen=True)
class ZeroShot:
    """A zero-shot classification: per label, the prompt, its cosine with the image and its probability."""

    labels: list[str]
    prompts: list[str]
    cosines: list[float]
    probabilities: list[float]  # softmax(logit_scale × cosine): sums to 1
    logit_scale: float

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.labels, self.probabilities))


def classify(
    image: ImageSource, labels: Sequence[str] | str, model: ClipModel, template: str = TEMPLATE
) -> ZeroShot:
    """Zero-shot classification with every number shown (see :func:`zero_shot`)."""
    labels = check_labels(labels)
    template = check_template(template)
    prompts = [template.replace("{}", label) for label in labels]
    cosines = model.embed_texts(prompts) @ image_vector(image, model, "the image")  # (labels,)
    probabilities = clip_probabilities(cosines, model.logit_scale)
    return ZeroShot(labels, prompts, cosines.tolist(), probabilities.tolist(), model.logit_scale)


def zero_shot(
    image: ImageSource, labels: Sequence[str] | str, model: ClipModel, template: str = TEMPLATE
) -> dict[str, float]:
    """Which label fits the image: ``{label: probability}``, summing to 1.

    Each label is put into ``template`` ("a photo of a {}."), embedded, and compared with the image; the
    cosines times the model's logit scale go through a softmax, as CLIP was trained.
    """
    return classify(image, labels, model, template).as_dict()


def similarity_matrix(images: Sequence[Any], texts: Sequence[str], model: ClipModel) -> np.ndarray:
    """The book's table: cosine similarity of every image with every text, ``(len(images), len(texts))``."""
    texts = [check_query(text) for text in texts]
    if not texts:
        raise InputError("Give at least one caption.")
    pairs = named_images(images)
    if not pairs:
        raise InputError("Choose at least one image.")
    vectors, _ = vectors_of([prepare_image(source, name) for name, source in pairs], model)
    return vectors @ model.embed_texts(texts).T
