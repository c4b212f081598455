"""The simulated students: what they click (:data:`MIX`), with which inputs, as locust users.

Every student first visits each tab once, starting at a different tab than its neighbours (so that a short
run still reaches every endpoint), then clicks with the mix's weights, reading for 1–3 s after each answer.
One student of the class starts a fine-tune run and watches its progress until it ends.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.classroom.api import LabAPI

if TYPE_CHECKING:
    from bench.classroom.measures import Recorder

THINK_S = (1.0, 3.0)

# Endpoint → (weight in a student's mix, kind). "cheap" events run on the CPU for everyone at once; "model"
# events wait in the one model queue. The fine-tune endpoints are called by one student of the class.
MIX: dict[str, tuple[int, str]] = {
    "/tokenize": (12, "cheap"),
    "/next_token": (3, "model"),
    "/attention": (2, "model"),
    "/similarity": (2, "model"),
    "/topics_search": (2, "model"),
    "/clip_search": (2, "model"),
    "/caption": (1, "model"),
}
FINETUNE = {"/finetune_start": "cheap", "/finetune_status": "cheap"}
KINDS: dict[str, str] = {**{name: kind for name, (_, kind) in MIX.items()}, **FINETUNE}

# The book's four tokenizers with offline vocabularies (lab.catalog), on the book's chapter 2 sample text.
TOKENIZERS = ["bert-base-uncased", "gpt2", "Xenova/gpt-4", "microsoft/Phi-3-mini-4k-instruct"]
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CLIP = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"  # a tiny random CLIP under this id in LAB_MODEL_DIR
BLIP2 = "Salesforce/blip2-opt-2.7b"  # a tiny random BLIP-2 under this id in LAB_MODEL_DIR
PROMPTS = [
    "The capital of France is",
    "A tokenizer splits a sentence into",
    "Large language models read text as",
    "The cat sat on the",
]
SENTENCES = [
    ["I love eating bread.", "Food is delicious.", "The stock market fell today."],
    ["A dog plays in the park.", "A puppy runs on the grass.", "Interest rates rose again."],
]
TOPIC_QUERIES = ["football", "painting", "planets", "war", "music", "mathematics"]
CLIP_QUERIES = ["a photo of a cat", "a car on the road", "a puppy", "the moon at night", "coffee"]
# The one shared fit (the instructor's, before class): corpus, n_neighbors, min_cluster_size, min_samples,
# nr_topics, stop_words, as /topics_fit and /topics_search take them.
TOPIC_FIT = ("wikipedia", 15, 50, None, None, True)
FINETUNE_PRESET = "Classroom quick (CPU)"
# The class's fine-tune run: a tiny random Llama, a few steps on the shipped chats, one CPU thread.
FINETUNE_CHANGES = {
    "max_steps": 8,
    "max_examples": 16,
    "eval_examples": 4,
    "max_seq_length": 64,
    "cpu_threads": 1,
}


@dataclass
class Plan:
    """What the students need to know: the server, the texts and image they send, where they record."""

    url: str
    sample_text: str
    image: Path
    tiny_llama: str
    recorder: Recorder


def endpoint_inputs(name: str, plan: Plan, rng: random.Random, image: Any = None) -> list[Any]:
    """The inputs of one call to ``name``, every one given, as a student's page sends them."""
    if name == "/tokenize":
        return [plan.sample_text, TOKENIZERS]
    if name == "/next_token":
        return [rng.choice(PROMPTS), SMOLLM2, 10, 1.0, 1.0]
    if name == "/attention":
        return [rng.choice(PROMPTS), MINILM]
    if name == "/similarity":
        return [rng.choice(SENTENCES), MINILM]
    if name == "/topics_search":
        corpus, *fit = TOPIC_FIT
        return [rng.choice(TOPIC_QUERIES), 5, corpus, *fit]
    if name == "/clip_search":
        return [rng.choice(CLIP_QUERIES), 8, CLIP]
    if name == "/caption":
        return [image, BLIP2, "", "auto"]
    raise ValueError(f"no inputs for {name}")


def user_classes() -> list[type]:
    """A class's locust user classes, fresh for every run (the fine-tuning student keeps its job id).

    Built on call so that importing this module does not import locust, whose gevent patches the process.
    """
    from locust import User, between, task

    class Student(User):
        """A student: every tab once, then the mix's weights; 1–3 s of reading after each answer."""

        wait_time = between(*THINK_S)
        arrived = 0  # students so far: each starts its tour of the tabs one tab further on

        def on_start(self) -> None:
            self.plan: Plan = self.environment.lab_plan
            self.api = LabAPI(self.plan.url)
            self.api.open_page()  # the tab is open until the student leaves (on_stop)
            Student.arrived += 1
            self.rng = random.Random(Student.arrived)
            names = list(MIX)
            start = Student.arrived % len(names)
            self.tour = names[start:] + names[:start]
            self.image: Any = None

        def on_stop(self) -> None:
            self.api.close_page()  # the student closes the tab: the server frees their session

        def timed(self, name: str, *inputs: Any) -> Any:
            """Call ``name`` and report it to locust (whose ``request`` event the recorder listens to)."""
            started = time.perf_counter()
            exception, answer = None, None
            try:
                answer = self.api.call(name, *inputs)
            except Exception as error:  # an endpoint's error is a measure, not the end of the student
                exception = error
            self.environment.events.request.fire(
                request_type="API",
                name=name,
                response_time=(time.perf_counter() - started) * 1000,
                response_length=0,
                exception=exception,
                context={},
            )
            return answer

        def click(self, name: str) -> None:
            if name == "/caption" and self.image is None:
                self.image = self.api.upload(self.plan.image)  # once, as the page keeps it
            self.timed(name, *endpoint_inputs(name, self.plan, self.rng, self.image))

        @task
        def next_click(self) -> None:
            if self.tour:
                self.click(self.tour.pop(0))
                return
            names = list(MIX)
            self.click(self.rng.choices(names, weights=[MIX[n][0] for n in names])[0])

    class FineTuningStudent(Student):
        """The class's one fine-tune run: started on arrival, its status polled after every read until it
        ends; then this student clicks around like the others."""

        fixed_count = 1
        job_id: str | None = None

        def on_start(self) -> None:
            super().on_start()
            changes = {**FINETUNE_CHANGES, "base_model": self.plan.tiny_llama}
            answer = self.timed("/finetune_start", FINETUNE_PRESET, changes, "")
            if isinstance(answer, dict) and answer.get("job_id"):
                FineTuningStudent.job_id = answer["job_id"]
                self.plan.recorder.finetune_started(answer["job_id"], self.api.session_hash)

        @task
        def next_click(self) -> None:
            recorder = self.plan.recorder
            if self.job_id and recorder.finetune_status is None:
                status = self.timed("/finetune_status", self.job_id, 5)
                if isinstance(status, dict) and status.get("status") not in ("queued", "running"):
                    recorder.finetune_ended(status.get("status"))
                return
            super().next_click()

    return [Student, FineTuningStudent]
