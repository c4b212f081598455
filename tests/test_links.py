"""Links are untrusted input: every parameter is checked against lab.validate's bounds, kept or dropped
with a reason; the markup a link carries ends up escaped in the page; shared fine-tune runs show only
their public part, under a code nobody can guess."""

from __future__ import annotations

import pytest

from lab import links
from lab.errors import LabError

INJECTED = "<img src=http://198.51.100.7/x.png>"  # as in test_validate: the page must never ask for it


def test_a_link_selects_its_tab_and_keeps_what_passes_the_bounds():
    link = links.decode(
        "?tab=attention&att.text=Hello&att.layer=999&att.head=3&att.model=%3Cimg%3E", max_text_chars=100
    )
    assert link.tab == "attention"
    assert link.of("attention") == {"att.text": "Hello", "att.head": 3}
    assert "att.layer: layer must be a whole number between 0 and 127, got 999." in link.problems
    assert any(p.startswith("att.model: '<img>' is not a model id") for p in link.problems)


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("tab=nowhere", "tab: no tab is called 'nowhere'."),
        ("text=" + "a" * 101, "text: text has 101 characters; the lab takes at most 100. Shorten it by 1."),
        ("top.corpus=upload", "top.corpus: top.corpus must be one of 'wikipedia', 'arxiv_nlp', got 'upload'."),  # noqa: E501
        ("top.stop_words=yes", "top.stop_words: top.stop_words must be one of '1', '0', got 'yes'."),
        ("clip.k=ten", "clip.k: k must be a whole number between 1 and 24, got 'ten'."),
        ("ft.share=../../etc/passwd", "ft.share: '../../etc/passwd' is not a share code (32 hexadecimal digits)."),  # noqa: E501
        ("vc.image=/etc/passwd", "vc.image: vc.image must be one of 'car.png', 'puppy.png', 'cat.png', got '/etc/passwd'."),  # noqa: E501
    ],
)  # fmt: skip
def test_each_bad_parameter_is_dropped_with_its_reason(query, problem):
    link = links.decode(query, max_text_chars=100)
    assert link.problems == [problem]
    assert link.values == {}


def test_a_classroom_link_names_only_catalog_models_and_repeats_are_capped():
    link = links.decode("tok=gpt2,someone/huge-model", max_text_chars=100, allowed=lambda m: m == "gpt2")
    assert link.problems == ["tok: this server does not load 'someone/huge-model'."]
    too_many = "&".join(f"vc.q=q{i}" for i in range(links.MAX_TURNS + 1))
    assert "the lab takes at most 5" in links.decode(too_many, max_text_chars=100).problems[0]


def test_encode_then_decode_gives_back_the_view():
    view = {"vc.image": "car.png", "vc.q": ["What is it?", "Which colour & why?"]}
    query = links.encode("vision-chat", view)
    assert query.startswith("tab=vision-chat&")
    link = links.decode(query, max_text_chars=100)
    assert link.tab == "vision-chat" and link.of("vision-chat") == view
    topics = {"top.corpus": "wikipedia", "top.stop_words": False, "top.min_cluster_size": 30, "top.topic": -1}
    assert links.decode(links.encode("topics", topics), max_text_chars=100).of("topics") == topics


def test_a_token_follows_to_the_attention_tab_and_its_words_are_found_in_the_text():
    link = links.attention_link("bert-base-uncased", "Hello world")
    assert links.decode(link, max_text_chars=100).of("attention") == {
        "att.model": "sentence-transformers/all-MiniLM-L6-v2",
        "att.text": "Hello world",
    }
    assert links.attention_link("Xenova/gpt-4o", "Hello") is None  # no attention model of that family
    tokens = ["[CLS]", "the", "cap", "##ital", "Ġis", "[SEP]"]
    special = [True, False, False, False, False, True]
    assert links.token_ends("The capital is", tokens, special) == [None, 3, 7, 11, 14, None]


def test_a_shared_run_shows_its_public_part_only_under_an_unguessable_code(tmp_path, monkeypatch):
    from lab.finetune import share

    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    run.mkdir()
    snapshot = {
        "status": "done",
        "step": 2,
        "total_steps": 2,
        "losses": [[1, 2.0], [2, 1.5]],
        "base_model": INJECTED,
        "logs": ["a training example the owner did not share"],
        "output_dir": str(run),
        "job_id": "20260101-000000-abcd1234",
    }
    with pytest.raises(LabError, match="Only a finished run can be shared"):
        share.publish({**snapshot, "status": "running"}, run)
    share.record_comparison(run, "Tell me", "base says", "tuned says")
    code = share.publish(snapshot, run)
    assert links.SHARE_TOKEN.match(code)
    public = share.load(code)
    assert public["comparison"] == {"prompt": "Tell me", "base": "base says", "tuned": "tuned says"}
    assert "logs" not in public and "output_dir" not in public and "job_id" not in public
    with pytest.raises(share.NotShared):
        share.load("0" * 32)
