"""The fine-tune library (chapter 12): runs in their own process, queue, cancel, outputs, bad input.

Most tests train a tiny random Llama (:func:`lab.testing.write_llama_causal_lm`) for a few steps: they test
the plumbing, not what it learns. The ``slow`` ones train the real SmolLM2-135M on the offline Wikipedia
set, and call the tab's API names with gradio_client against a launched app.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import threading
import time
import zipfile
from pathlib import Path

import pytest

from lab import finetune, testing
from lab.finetune import FineTuneConfig
from tests.helpers import ROOT, local_settings, serve_tab

CHATS = [
    {"messages": [{"role": "user", "content": f"Tell me about item {i}."},
                  {"role": "assistant", "content": f"Item {i} is a token of the model."}]}
    for i in range(24)
]  # fmt: skip


@pytest.fixture
def chats_file(tmp_path: Path) -> Path:
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    return path


@pytest.fixture
def runner() -> finetune.Runner:
    """A queue of its own per test, so one test's runs never wait behind another's."""
    return finetune.Runner()


def tiny(folder: Path, tmp_path: Path, data: Path, **changes: object) -> FineTuneConfig:
    """The classroom preset on the tiny random Llama: a few steps of one thread on short chats."""
    values: dict = dict(
        base_model=str(folder),
        dataset=str(data),
        max_examples=16,
        eval_examples=4,
        max_steps=3,
        max_seq_length=64,
        output_dir=str(tmp_path / "runs"),
        cpu_threads=1,  # a 50k-parameter model gains nothing from more, and shares the CI's two cores
    )
    values.update(changes)
    return FineTuneConfig.classroom(**values)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


# -- a run, its outputs, and the adapter ---------------------------------------------------------------


def test_tiny_random_llama_trains_saves_and_the_adapter_reloads(tiny_llama, tmp_path, chats_file, runner):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = tiny(tiny_llama, tmp_path, chats_file, eval_steps=2)
    job = finetune.start(config, runner)
    result = job.wait(timeout=180)

    assert result.status == "done" and job.status == "done"
    assert result.method == "lora-fp32"  # quantize_4bit is off in the classroom preset
    assert [step for step, _ in result.losses] == [1, 2, 3]
    assert all(loss > 0 for _, loss in result.losses)
    assert [step for step, _ in result.eval_losses] == [2, 3]
    assert len(job.learning_rates) == 3 and job.learning_rates[0][1] == pytest.approx(
        1e-3
    )  # cosine, no warm-up
    assert job.trainable == job.plan.trainable  # the plan's count is peft's count
    folder = result.output_dir
    assert folder.parent == tmp_path / "runs" and finetune.RUN_ID.match(folder.name)
    assert {"settings.json", "metrics.json", "log.txt", "adapter"} <= {p.name for p in folder.iterdir()}
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["method"] == "lora-fp32" and settings["config"]["r"] == 8
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["train_tokens"] > 0 and metrics["peak_memory_bytes"] > 0
    adapter_config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert set(adapter_config["target_modules"]) == set(finetune.BOOK_TARGET_MODULES)
    assert adapter_config["r"] == 8

    saved = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    reloaded = PeftModel.from_pretrained(base, str(result.adapter_dir))
    state = {k: v for k, v in reloaded.state_dict().items() if "lora_B" in k}
    assert state and any(v.abs().sum() > 0 for v in state.values())  # B starts at zero: it trained
    for name, tensor in saved.items():
        if "lora_B" in name:
            match = [v for k, v in state.items() if k.replace(".default", "") == name]
            assert match and torch.equal(match[0], tensor)

    names = zipfile.ZipFile(finetune.zip_run(folder)).namelist()
    assert f"{folder.name}/adapter/adapter_model.safetensors" in names
    assert f"{folder.name}/settings.json" in names and f"{folder.name}/metrics.json" in names

    base_text, tuned_text = finetune.generate_pair("Tell me about item 3.", None, result.adapter_dir, 6)
    assert isinstance(base_text, str) and isinstance(tuned_text, str)
    for answer in (base_text, tuned_text):  # each says why it ended, consistently with its length
        assert (answer.stopped, answer.tokens) == ("limit", 6) or (
            answer.stopped == "end" and answer.tokens <= 6
        )


def test_tiny_random_merge_writes_a_16_bit_model_that_answers_as_base_plus_adapter(
    tiny_llama, tmp_path, chats_file, runner
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = finetune.start(tiny(tiny_llama, tmp_path, chats_file, merge=True, max_steps=2), runner).wait(180)
    assert result.merged_dir is not None and (result.merged_dir / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert merged.dtype == torch.float16  # the book reloads the base in 16-bit before merge_and_unload
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama), str(result.adapter_dir)
    )
    ids = torch.tensor([[5, 17, 42, 8]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
        got = merged.float()(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=2e-2)
    archive = zipfile.ZipFile(finetune.zip_run(result.output_dir))
    assert not any("merged" in name for name in archive.namelist())


def test_closing_the_compare_stream_leaves_no_generation_thread_and_frees_the_model(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lab import cache, streaming
    from lab.finetune import compare

    assert compare.answer_stream.lab_forward  # the one forward wrapper: ZeroGPU, OOM guard
    adapter = tmp_path / "adapter"
    lora = LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), lora).save_pretrained(adapter)
    stream = finetune.generate_pair_stream("Tell me about item 3.", str(tiny_llama), adapter, 200)
    next(stream), next(stream)
    assert streaming.running_threads()  # the base model is answering
    stream.close()  # what Gradio does on Stop or a closed page
    assert streaming.running_threads() == []  # at once: closing joins the thread
    assert sum(entry.leases for entry in cache.stats()) == 0


def test_each_run_gets_a_new_folder_that_is_never_reused(tmp_path):
    first, second = finetune.new_run_dir(tmp_path), finetune.new_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert finetune.run_dir(first.name, tmp_path) == first
    with pytest.raises(ValueError, match="not a run id"):
        finetune.run_dir("../../etc", tmp_path)


def test_a_plain_script_without_a_main_guard_can_start_a_run(tiny_llama, tmp_path, chats_file):
    """The training process is a command: nothing of the calling script is imported again."""
    import subprocess
    import sys

    config = tiny(tiny_llama, tmp_path, chats_file, max_steps=2)
    script = tmp_path / "train.py"
    script.write_text(
        "from lab import finetune\n"
        f"config = finetune.FineTuneConfig.from_dict({config.to_dict()!r})\n"
        "job = finetune.start(config)\n"
        "result = job.wait(timeout=180)\n"
        "print('status:', result.status, len(result.losses))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # where the project is not installed, as a user would
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "status: done 2" in done.stdout
    (folder,) = (tmp_path / "runs").iterdir()
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert events[-1] == {"type": "end", "status": "done"}
    assert "crashed" not in (folder / "log.txt").read_text()


def test_the_worker_is_a_command_on_a_run_folder(tiny_llama, tmp_path, chats_file):
    """`python -m lab.finetune.worker RUN_DIR` trains the run its settings.json describes."""
    import subprocess
    import sys

    from lab.finetune import jobs, runs

    config = tiny(tiny_llama, tmp_path, chats_file, max_steps=2, eval_examples=0)
    folder = runs.new_run_dir(config.output_dir)
    runs.write_settings(folder, config, finetune.plan(config))
    done = subprocess.run(
        [sys.executable, "-m", "lab.finetune.worker", str(folder)],
        env=jobs.worker_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2]
    assert events[-1] == {"type": "end", "status": "done"}
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "metrics.json").read_text())["steps"] == 2


# -- queue and cancel ---------------------------------------------------------------------------------


def test_tiny_random_cancel_ends_a_running_job_promptly(tiny_llama, tmp_path, chats_file, runner):
    job = finetune.start(tiny(tiny_llama, tmp_path, chats_file, max_steps=100_000), runner)
    wait_for(lambda: job.step >= 2, timeout=120)
    pid = job.pid
    started = time.time()
    job.cancel()
    result = job.wait(timeout=10)
    assert time.time() - started < 5
    assert result.status == "cancelled" and result.adapter_dir is None
    assert 2 <= result.steps < 100_000
    wait_for(lambda: not _alive(pid), timeout=5)  # the process, and its memory, are gone
    assert "cancelled" in job.logs[-1]


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a finished child of the fork server may linger as a zombie for a moment
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_tiny_random_cancel_during_model_loading(tiny_llama, tmp_path, chats_file, runner, monkeypatch):
    from lab.finetune.worker import LOAD_DELAY_ENV

    monkeypatch.setenv(LOAD_DELAY_ENV, "60")  # the worker blocks as a long weight load would
    job = finetune.start(tiny(tiny_llama, tmp_path, chats_file), runner)
    wait_for(lambda: job.phase == "loading" and any("data:" in line for line in job.logs), timeout=120)
    started = time.time()
    job.cancel()
    result = job.wait(timeout=10)
    assert time.time() - started < 5  # not cooperative here: the process is terminated
    assert result.status == "cancelled" and result.steps == 0
    wait_for(lambda: not _alive(job.pid), timeout=5)


def test_tiny_random_second_start_queues_then_runs(tiny_llama, tmp_path, chats_file, runner, monkeypatch):
    from lab.finetune.worker import LOAD_DELAY_ENV

    monkeypatch.setenv(LOAD_DELAY_ENV, "60")
    first = finetune.start(tiny(tiny_llama, tmp_path, chats_file), runner)
    # "running" is set before the process (and the environment it copies) exists: wait until it loads.
    wait_for(lambda: first.phase == "loading" and any("data:" in line for line in first.logs), timeout=120)
    monkeypatch.delenv(LOAD_DELAY_ENV)
    second = finetune.start(tiny(tiny_llama, tmp_path, chats_file), runner)
    assert second.status == "queued" and second.position == 1
    assert second.snapshot()["position"] == 1 and "position 1" in second.logs[-1]
    time.sleep(1)
    assert second.status == "queued"  # one run at a time
    first.cancel()
    assert second.wait(timeout=120).status == "done"
    assert first.status == "cancelled"


def test_cancelling_a_queued_run_removes_it_from_the_queue(
    tiny_llama, tmp_path, chats_file, runner, monkeypatch
):
    from lab.finetune.worker import LOAD_DELAY_ENV

    monkeypatch.setenv(LOAD_DELAY_ENV, "60")
    jobs = [finetune.start(tiny(tiny_llama, tmp_path, chats_file), runner) for _ in range(3)]
    wait_for(lambda: jobs[0].status == "running", timeout=30)
    assert [j.position for j in jobs[1:]] == [1, 2]
    jobs[1].cancel()
    assert jobs[1].status == "cancelled" and jobs[2].position == 1
    for job in (jobs[2], jobs[0]):
        job.cancel()
        job.wait(timeout=10)


def test_tiny_random_two_users_pressing_start_at_once(tiny_llama, tmp_path, chats_file, runner):
    configs = [tiny(tiny_llama, tmp_path, chats_file, seed=seed) for seed in (1, 2)]
    jobs: list[finetune.Job] = []
    barrier = threading.Barrier(2)

    def press(config: FineTuneConfig) -> None:
        barrier.wait()
        jobs.append(finetune.start(config, runner))

    threads = [threading.Thread(target=press, args=(c,)) for c in configs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({job.output_dir for job in jobs}) == 2  # separate folders
    results = [job.wait(timeout=180) for job in jobs]
    assert [r.status for r in results] == ["done", "done"]
    first, second = sorted(jobs, key=lambda j: j.started or 0)
    assert second.started >= first.finished - 0.01  # never two at once


def test_a_crashed_training_process_fails_the_run_but_not_the_app(tiny_llama, tmp_path, chats_file, runner):
    job = finetune.start(tiny(tiny_llama, tmp_path, chats_file, max_steps=100_000), runner)
    wait_for(lambda: job.step >= 1, timeout=120)
    os.kill(job.pid, signal.SIGKILL)  # what the kernel's out-of-memory killer does
    with pytest.raises(finetune.FineTuneError, match="killed"):
        job.wait(timeout=10)
    assert job.status == "failed" and "The app is unaffected" in job.error
    # the queue goes on
    assert finetune.start(tiny(tiny_llama, tmp_path, chats_file), runner).wait(timeout=120).status == "done"


def test_tiny_random_4bit_runs_when_bitsandbytes_can(tmp_path, chats_file, runner):
    ok, why = finetune.bitsandbytes_4bit()
    # 64 wide: bitsandbytes quantises in blocks of 64 inputs, and its CPU path needs one whole block
    wide = testing.write_llama_causal_lm(tmp_path / "wide-llama", hidden_size=64)
    config = tiny(wide, tmp_path, chats_file, quantize_4bit=True, max_steps=3, eval_steps=1)
    method, notes = finetune.choose_method(config, "cpu")
    if not ok:
        assert method == "lora-fp32" and "bitsandbytes" in notes[0]
        pytest.skip(f"no 4-bit here ({why}): the run falls back to LoRA fp32, as tested above")
    assert method == "qlora-4bit"
    result = finetune.start(config, runner).wait(timeout=180)
    assert result.method == "qlora-4bit" and len(result.losses) == 3 and len(result.eval_losses) == 3
    assert json.loads((result.output_dir / "settings.json").read_text())["method_title"] == "QLoRA 4-bit NF4"


def test_4bit_without_bitsandbytes_on_cuda_is_refused_and_on_cpu_falls_back(monkeypatch):
    import torch

    from lab.finetune import estimate

    monkeypatch.setattr(estimate, "bitsandbytes_4bit", lambda: (False, "bitsandbytes is not installed"))
    config = FineTuneConfig(quantize_4bit=True)
    method, notes = finetune.choose_method(config, "cpu")
    assert method == "lora-fp32" and "plain LoRA" in notes[0]
    from lab import device

    monkeypatch.setattr(device, "select", lambda name=None: device.Placement("cuda", torch.bfloat16))
    with pytest.raises(ValueError, match="4-bit QLoRA needs bitsandbytes"):
        finetune.choose_method(config, "cuda")


# -- the model, the plan, the preview ---------------------------------------------------------------


def test_tiny_random_model_facts_list_the_linear_layers_and_count_lora_parameters(tiny_llama):
    facts = finetune.model_facts(str(tiny_llama))
    assert facts.target_choices == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    # hidden 32, 2 layers; q/o 32→32, k/v 32→16 (2 of 4 heads), MLP 32↔64
    assert facts.lora_parameters(8, ["q_proj"]) == 2 * 8 * (32 + 32)
    assert facts.lora_parameters(8, ["k_proj", "down_proj"]) == 2 * 8 * (32 + 16) + 2 * 8 * (64 + 32)


def test_gpt2_style_conv1d_layers_are_listed_and_counted_per_shape(tmp_path):
    from transformers import GPT2Config

    GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, architectures=["GPT2LMHeadModel"]
    ).save_pretrained(tmp_path)
    facts = finetune.model_facts(str(tmp_path))
    assert facts.target_choices == ["c_attn", "c_proj", "c_fc"]
    # c_proj is 32→32 in attention and 128→32 in the MLP, in each of 2 layers
    assert facts.lora_parameters(4, ["c_proj"]) == 4 * 2 * ((32 + 32) + (128 + 32))


def test_plan_reports_trainable_share_memory_time_and_steps(tiny_llama, tmp_path, chats_file):
    config = tiny(tiny_llama, tmp_path, chats_file, max_steps=0, epochs=2, batch_size=2, grad_accum=2)
    plan = finetune.plan(config)
    assert plan.train_examples == 16 and plan.eval_examples == 4
    assert plan.total_steps == 8  # 16 chats / batch 2 = 8 batches / accumulate 2 = 4 steps per epoch
    assert 0 < plan.trainable_percent < 100 and plan.memory_bytes > 0 and plan.seconds > 0
    assert "LoRA fp32" in plan.summary() and "trainable" in plan.summary()
    assert finetune.steps_for(config.replace(step_cap=5), 16) == 5  # a classroom server's cap


def test_preview_renders_the_chat_template_with_special_tokens_and_counts(tiny_llama, tmp_path, chats_file):
    shown = finetune.preview(tiny(tiny_llama, tmp_path, chats_file), n=2)
    assert len(shown.examples) == 2 and shown.conversations == 16
    first = shown.examples[0]
    assert first.text.startswith("<|im_start|>user\nTell me about item 0.<|im_end|>")
    assert first.tokens > 5 and not first.truncated
    page = finetune.preview_html(shown)
    assert '<span class="special">&lt;|im_start|&gt;</span>' in page


def test_the_check_exports_each_previewed_token_for_the_loss_and_the_plan(tiny_llama, tmp_path, chats_file):
    from lab import export
    from tests.helpers import by_suffix, rows

    config = tiny(tiny_llama, tmp_path, chats_file)
    plan, shown = finetune.plan(config), finetune.preview(config, n=2)
    files = by_suffix(export.finetune_preview_files(plan, shown))
    table = rows(files[".csv"][0])
    assert table[0] == ["example", "position", "token", "for the loss"]
    first = [row[2] for row in table[1:] if row[0] == "0"]
    assert "".join(first) == shown.examples[0].text and {row[3] for row in table[1:]} == {"loss"}
    data = json.loads(files[".json"][0].read_text())
    assert data["plan"]["total_steps"] == plan.total_steps and "output_dir" not in data["plan"]["config"]
    assert data["preview"]["examples"][1]["tokens"] == shown.examples[1].tokens


def test_book_template_renders_as_the_book_shows(tiny_llama):
    from lab import models

    tokenizer = models.tokenizer(str(tiny_llama), str(tiny_llama))
    messages = [{"role": "user", "content": "Tell me something about Large Language Models."}]
    text = finetune.render_chat(tokenizer, messages, finetune.TINYLLAMA_CHAT_TEMPLATE, generation_prompt=True)
    assert text == "<|user|>\nTell me something about Large Language Models.</s>\n<|assistant|>\n"


def test_offline_wikipedia_set_matches_its_provenance():
    data = finetune.WIKIPEDIA_FILE.read_bytes()
    licence = (finetune.WIKIPEDIA_FILE.parent / "LICENSE.md").read_text()
    assert hashlib.sha256(data).hexdigest() in licence and "CC BY-SA 4.0" in licence
    rows = [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
    assert len(rows) == 4000
    assert rows[0]["messages"][0]["content"].startswith("Tell me")
    assert all(
        r["messages"][1]["role"] == "assistant" and r["source"].startswith("https://en.wikipedia")
        for r in rows
    )
    chats = finetune.load_conversations("wikipedia-instruct", 300, 8)
    assert len(chats.train) == 300 and len(chats.eval) == 8 and "CC BY-SA" in chats.source


def test_first_sentences_keep_abbreviations_and_initials_whole():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_finetune_assets",
        Path(__file__).resolve().parent.parent / "scripts" / "build_finetune_assets.py",
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = "J. S. Bach was a composer. He worked in St. Thomas in Leipzig. He died in 1750. More."
    assert (
        script.first_sentences(text, min_words=8)
        == "J. S. Bach was a composer. He worked in St. Thomas in Leipzig."
    )


def test_ultrachat_selection_is_datasets_shuffle_with_seed_42():
    import numpy as np

    picked = finetune.ultrachat_indices(23_110, 3_000, 42)
    assert len(picked) == len(set(picked)) == 3_000
    assert picked == np.random.default_rng(42).permutation(23_110)[:3_000].tolist()


# -- bad input -----------------------------------------------------------------------------------------


def test_malformed_jsonl_lines_are_reported_with_their_numbers(tmp_path, tiny_llama):
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(CHATS[0]),
        '{"messages": [{"role": "user", "content": "hi"}',  # cut short
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        "",
        json.dumps({"instruction": "Say hi.", "output": "Hi!"}),  # Alpaca style is fine
        json.dumps({"text": "no chat here"}),
        json.dumps({"messages": [{"role": "robot", "content": "beep"}]}),
    ]
    path.write_text("\n".join(lines) + "\n")
    chats, problems, skipped = finetune.read_jsonl(path)
    assert len(chats) == 2 and skipped == 4
    assert problems[0].startswith("line 2: not valid JSON")
    assert problems[1] == "line 3: no assistant message to learn from"
    assert problems[2].startswith("line 6: no 'messages'")
    assert problems[3] == "line 7: unknown role 'robot' (use system, user, assistant)"
    shown = finetune.preview(
        FineTuneConfig.classroom(base_model=str(tiny_llama), dataset=str(path), max_seq_length=64)
    )
    assert "line 2: not valid JSON" in finetune.preview_html(shown)


def test_a_dataset_with_no_usable_conversations_is_refused(tmp_path, tiny_llama):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"No usable conversations .*line 1: .*line 2: not valid JSON"):
        finetune.start(
            FineTuneConfig.classroom(base_model=str(tiny_llama), dataset=str(path), max_seq_length=64)
        )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="the file is empty"):
        finetune.load_conversations(str(empty), 10)
    with pytest.raises(ValueError, match="does not exist"):
        finetune.load_conversations(str(tmp_path / "missing.jsonl"), 10)


def test_over_long_conversations_are_truncated_and_counted(tiny_llama, tmp_path, chats_file):
    long_chat = {"messages": [{"role": "user", "content": "Tell me everything."},
                              {"role": "assistant", "content": "tokens " * 200}]}  # fmt: skip
    path = tmp_path / "long.jsonl"
    path.write_text(chats_file.read_text() + json.dumps(long_chat) + "\n")
    config = tiny(tiny_llama, tmp_path, path, max_examples=25, eval_examples=0, max_seq_length=32)
    chats = finetune.load_conversations(config.dataset, 25)
    from lab import models

    tokenizer = models.tokenizer(str(tiny_llama), str(tiny_llama))
    tokens = finetune.tokenize(tokenizer, chats, finetune.chat_template(tokenizer, "x"), 32)
    assert max(len(ids) for ids in tokens.train) == 32
    assert tokens.truncated >= 1
    plan = finetune.plan(config)
    assert plan.truncated == tokens.truncated and "were truncated" in plan.summary()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"r": 0}, "LoRA rank r must be a whole number above 0"),
        ({"r": -4}, "LoRA rank r must be a whole number above 0"),
        ({"learning_rate": 0.5}, "Learning rate 0.5 is out of range"),
        ({"learning_rate": 0.0}, "Learning rate 0 is out of range"),
        ({"lora_dropout": 1.0}, "dropout must be in"),
        ({"batch_size": 0}, "Batch size"),
        ({"target_modules": ()}, "at least one target module"),
        ({"lr_scheduler": "warp"}, "Scheduler must be one of"),
    ],
)
def test_bad_settings_are_refused_before_anything_loads(changes, message):
    with pytest.raises(ValueError, match=message):
        finetune.start(FineTuneConfig(**changes), finetune.Runner())


def test_a_target_module_the_model_lacks_is_refused(tiny_llama, tmp_path, chats_file):
    config = tiny(tiny_llama, tmp_path, chats_file, target_modules=("q_proj", "c_attn"))
    with pytest.raises(
        ValueError, match=r"has no linear layer named c_attn; its linear layers are q_proj, k_proj"
    ):
        finetune.start(config, finetune.Runner())


def test_a_base_model_that_is_not_a_causal_lm_is_refused(tmp_path, chats_file):
    bert = testing.write_bert_encoder(tmp_path / "bert")
    with pytest.raises(finetune.NotCausalLM, match="not a causal language model"):
        finetune.start(
            FineTuneConfig.classroom(base_model=str(bert), dataset=str(chats_file)), finetune.Runner()
        )
    # a catalog encoder is refused from the catalog alone, before anything is read
    with pytest.raises(finetune.NotCausalLM, match="is a sentence-encoder, not a causal language model"):
        finetune.model_facts("sentence-transformers/all-MiniLM-L6-v2")


def test_no_disk_space_for_the_output_is_refused(tiny_llama, tmp_path, chats_file, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ValueError, match="Not enough disk space"):
        finetune.start(tiny(tiny_llama, tmp_path, chats_file), finetune.Runner())


def test_ultrachat_offline_says_what_to_use_instead():
    with pytest.raises(finetune.DatasetUnavailable, match="wikipedia-instruct"):
        finetune.load_conversations("ultrachat", 3000)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seed": "x"}, "Seed must be a whole number, not 'x'"),
        ({"lora_alpha": "big"}, "LoRA alpha must be a number, not 'big'"),
        ({"r": 8.0}, "LoRA rank r must be a whole number, not 8.0"),
        ({"merge": "yes"}, "Merge must be true or false"),
    ],
)
def test_values_of_the_wrong_kind_are_refused_in_the_labs_words(changes, message):
    from lab.errors import InputError

    with pytest.raises(InputError, match=message):
        finetune.start(FineTuneConfig.from_dict(changes), finetune.Runner())


def test_form_values_become_a_config_and_bad_ones_are_named():
    from lab.errors import InputError

    form = {**FineTuneConfig.classroom().to_dict(), "r": 16.0, "seed": 7.0, "upload": None}
    del form["step_cap"], form["output_dir"], form["device"]
    config = finetune.from_form(form, step_cap=60)
    assert config.r == 16 and isinstance(config.r, int) and config.seed == 7 and config.step_cap == 60
    assert config.target_modules == finetune.BOOK_TARGET_MODULES
    with pytest.raises(InputError, match="Seed must be a whole number, not 1.5"):
        finetune.from_form({**form, "seed": 1.5})
    with pytest.raises(InputError, match="Upload a JSONL file"):
        finetune.from_form({**form, "dataset": "upload"})
    assert finetune.from_form({**form, "dataset": "upload", "upload": "/x/chats.jsonl"}).dataset == (
        "/x/chats.jsonl"
    )


def test_the_tabs_form_maps_to_the_config_and_back():
    """One table (field name → widget) reads the form into a config and writes a preset into the form."""
    import gradio as gr

    import tabs.finetune as tab
    from lab.errors import InputError

    settings = local_settings()
    with gr.Blocks():
        _, form = tab.form_widgets(finetune.BOOK_PRESET, settings)
    book = finetune.PRESETS[finetune.BOOK_PRESET]
    assert form["r"].value == 64 and form["dataset"].value == "ultrachat"  # widgets start at the preset
    shown = tab.to_form(form, book)
    assert set(shown) == {widget for name, widget in form.items() if name != "upload"}
    assert tab.to_config(form, {**shown, form["upload"]: None}, settings) == book
    with pytest.raises(InputError, match="Seed must be a whole number, not 0.5"):
        tab.to_config(form, {**shown, form["upload"]: None, form["seed"]: 0.5}, settings)


def test_unknown_settings_are_named():
    with pytest.raises(ValueError, match="unknown setting.*rank"):
        FineTuneConfig.from_dict({"rank": 8})
    assert FineTuneConfig.from_dict({"target_modules": "q_proj"}).target_modules == ("q_proj",)


# -- slow: the real SmolLM2 -----------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_classroom_preset_loss_falls_and_the_answer_changes(tmp_path):
    config = FineTuneConfig.classroom(max_steps=8, eval_examples=4, output_dir=str(tmp_path / "runs"))
    job = finetune.start(config, finetune.Runner())
    assert job.plan.trainable == 2_442_240  # r=8 on the seven projections of 30 layers
    result = job.wait(timeout=600)
    losses = [loss for _, loss in result.losses]
    print(f"SmolLM2 classroom, 8 steps: losses {[round(x, 3) for x in losses]}, {result.seconds:.0f} s")
    assert len(losses) == 8 and result.method == "lora-fp32"
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3  # it learns the data's format quickly
    assert result.eval_losses and result.eval_losses[-1][1] < losses[0]
    base_text, tuned_text = finetune.generate_pair(finetune.BOOK_PROMPT, None, result.adapter_dir, 40)
    print(f"base:  {base_text!r}\ntuned: {tuned_text!r}")
    assert base_text and tuned_text and base_text != tuned_text


@pytest.mark.gpu
def test_qlora_4bit_steps_on_cuda_with_the_books_optimizer(tmp_path, chats_file, runner):
    wide = testing.write_llama_causal_lm(tmp_path / "wide-llama", hidden_size=64)
    config = tiny(wide, tmp_path, chats_file, quantize_4bit=True, device="cuda", gradient_checkpointing=True)
    job = finetune.start(config, runner)
    result = job.wait(timeout=300)
    assert result.method == "qlora-4bit" and len(result.losses) == 3
    assert any("paged AdamW 32-bit" in line for line in job.logs)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda") and metrics["peak_memory_bytes"] > 0


# -- slow: the tab's API names, with gradio_client -----------------------------------------------------


@pytest.fixture(scope="module")
def finetune_app():
    import tabs.finetune

    with serve_tab(tabs.finetune.build, "QLoRA fine-tune · ch. 12", "finetune") as url:
        yield url


@pytest.mark.slow
def test_api_start_status_queue_cancel_and_compare(finetune_app, tiny_llama, tmp_path):
    from gradio_client import Client

    alice, bob = Client(finetune_app, verbose=False), Client(finetune_app, verbose=False)
    settings = {"base_model": str(tiny_llama), "max_examples": 16, "eval_examples": 4, "max_seq_length": 64,
                "cpu_threads": 1}  # fmt: skip
    long_run = alice.predict("Classroom quick (CPU)", {**settings, "max_steps": 100_000}, "",
                             api_name="/finetune_start")  # fmt: skip
    assert long_run["status"] in ("queued", "running") and long_run["method"] == "lora-fp32"
    jsonl = "".join(json.dumps(c) + "\n" for c in CHATS)
    queued = bob.predict(
        "Classroom quick (CPU)", {**settings, "max_steps": 2}, jsonl, api_name="/finetune_start"
    )
    assert queued["status"] == "queued" and queued["position"] == 1  # the second user waits, and sees where

    wait_for(
        lambda: alice.predict(long_run["job_id"], 5, api_name="/finetune_status")["step"] >= 1, timeout=120
    )
    status = alice.predict(long_run["job_id"], 5, api_name="/finetune_status")
    assert status["status"] == "running" and status["losses"] and status["total_steps"] == 100_000
    assert bob.predict(queued["job_id"], 5, api_name="/finetune_status")["position"] == 1

    cancelled = alice.predict(long_run["job_id"], api_name="/finetune_cancel")
    assert cancelled["status"] == "cancelled"
    wait_for(lambda: bob.predict(queued["job_id"], 0, api_name="/finetune_status")["status"] == "done", 120)
    base_text, tuned_text = bob.predict(
        "Tell me about item 2.", queued["job_id"], 5, api_name="/finetune_compare"
    )
    assert isinstance(base_text, str) and isinstance(tuned_text, str)

    with pytest.raises(Exception, match="LoRA rank r must be a whole number above 0"):
        alice.predict("Classroom quick (CPU)", {**settings, "r": 0}, "", api_name="/finetune_start")
    with pytest.raises(Exception, match="line 1: not valid JSON"):
        alice.predict("Classroom quick (CPU)", settings, "{oops\n", api_name="/finetune_start")
    with pytest.raises(Exception, match="No run"):
        alice.predict("20260101-000000-00000000", 5, api_name="/finetune_status")


# -- what the fine-tuned model sees (the data preview) ------------------------------------------------

TWO_TURNS = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello there."},
    {"role": "user", "content": "Again"},
    {"role": "assistant", "content": "Hello again."},
]


@pytest.mark.slow
def test_smollm2_answers_and_their_end_marker_are_what_counts_with_loss_on_answers_only():
    from lab import models
    from lab.finetune import data

    tokenizer = models.tokenizer(finetune.SMOLLM2)
    template = data.chat_template(tokenizer, finetune.SMOLLM2)
    ids, answer = data.encode_chat(tokenizer, TWO_TURNS, template)
    assert answer is not None and len(answer) == len(ids)
    counted = tokenizer.decode([i for i, a in zip(ids, answer, strict=True) if a])
    assert counted == "Hello there.<|im_end|>\nHello again.<|im_end|>\n"  # answers and their end, no prompt
    end = data.turn_end(tokenizer, template)
    assert end.stops and end.marker.startswith("<|im_end|>") and end.stop_token == "<|im_end|>"


@pytest.mark.slow
def test_a_template_that_never_writes_the_stop_token_is_the_never_stops_talking_warning():
    from lab import models
    from lab.finetune import data

    tokenizer = models.tokenizer(finetune.SMOLLM2)  # generation stops at <|im_end|>
    phi_style = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    end = data.turn_end(tokenizer, phi_style)  # ends answers with <|end|>, a marker that stops nothing
    assert not end.stops and "keep talking" in (end.warning or "")
    silent = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    nothing = data.turn_end(tokenizer, silent)
    assert not nothing.stops and "writes nothing after an answer" in (nothing.warning or "")


@pytest.mark.slow
def test_the_preview_marks_counted_masked_and_cut_tokens_and_says_how_answers_end(tmp_path, chats_file):
    from lab.finetune import view

    config = FineTuneConfig.classroom(dataset=str(chats_file), max_examples=8, eval_examples=0)
    every = finetune.preview(config, 1)
    assert {kind for _, kind in every.examples[0].pieces} == {"loss"}
    assert "".join(text for text, _ in every.examples[0].pieces) == every.examples[0].text

    masked = finetune.preview(config.replace(answers_only=True, max_seq_length=40), 1)
    kinds = [kind for _, kind in masked.examples[0].pieces]
    assert {"loss", "masked"} <= set(kinds)
    page = view.preview_html(masked)
    assert "Loss on answers only" in page and "class='masked'" in page and "learns to stop there" in page


def test_tiny_random_llama_trains_on_answers_only(tiny_llama, tmp_path, chats_file, runner):
    from lab.finetune import worker

    batch = worker._collate([([5, 6, 7, 8], [False, False, True, True]), ([5, 6], None)], 0, "cpu")
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [5, 6, -100, -100]]

    result = finetune.start(tiny(tiny_llama, tmp_path, chats_file, answers_only=True), runner).wait(180)
    assert result.status == "done" and all(0 < loss < 100 for _, loss in result.losses)


@pytest.mark.slow
def test_smollm2_answers_say_whether_they_ended_by_themselves_or_at_the_token_limit():
    from lab import models
    from lab.finetune import compare, view

    tokenizer = models.tokenizer(finetune.SMOLLM2)
    ids = compare._prompt_ids(tokenizer, finetune.SMOLLM2, "What is the capital of France?")
    with models.causal_lm(finetune.SMOLLM2) as network:
        whole = list(compare.stream_text(network, tokenizer, ids, 40))[-1]
        cut = list(compare.stream_text(network, tokenizer, ids, 3))[-1]
    assert "Paris" in whole and whole.stopped == "end" and whole.tokens < 40
    assert (cut.stopped, cut.tokens) == ("limit", 3)
    assert "by itself" in view.stopped_words(whole) and "3-token limit" in view.stopped_words(cut)
