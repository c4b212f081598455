"""GPU check of the chapter 9 tabs: ``python -m bench.gpu.check_vision [--scale small]`` on a CUDA machine.

No CLIP or BLIP-2 weights can be downloaded where this runs, so the architectures are built at full size
with random weights: speed and memory are real, answers are not.

- CLIP: ``bench.clip.measure`` on the GPU (random ViT-B-32 in the lab's dtype): batched indexing
  throughput and exact search up to 100k vectors.
- BLIP-2: a random model of ``Salesforce/blip2-opt-2.7b``'s shape (ViT-g, 32-query Q-Former, OPT-2.7b),
  saved and loaded through ``lab.models.vision_chat_model`` in 16-bit and, with bitsandbytes, in 4-bit:
  its precision, GPU memory, time to first token and tokens per second (``bench.vision_chat.measure``).

``--scale small`` builds small stand-ins so the script itself can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from bench import ROOT, shapes
from bench import clip as clip_bench
from bench import vision_chat as vision_chat_bench
from bench.timing import timed
from lab import models, testing, vision_chat
from lab.cache import CACHE

BLIP2_ID = "Salesforce/blip2-opt-2.7b"
FULL = shapes.BLIP2_OPT
# Small stand-ins of the same layout (2 layers of width 64), to check the script itself on a CPU.
_TINY_BLOCK = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2)
SMALL = {
    "vision": {**FULL["vision"], **_TINY_BLOCK, "intermediate_size": 128},
    "qformer": {**FULL["qformer"], **_TINY_BLOCK, "intermediate_size": 128, "encoder_hidden_size": 64},
    "text": {**FULL["text"], **_TINY_BLOCK, "word_embed_proj_dim": 64, "ffn_dim": 128},
    "query_tokens": 32,
}


def write_blip2_shape(folder: Path, shape: dict) -> Path:
    """A random BLIP-2 of the given shape with a working processor (the tiny test tokenizer's vocabulary)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    tiny = testing.write_blip2(folder.parent / "tiny", image_size=224, num_query_tokens=shape["query_tokens"])
    base = Blip2Config.from_pretrained(tiny)
    config = Blip2Config(
        vision_config={**base.vision_config.to_dict(), **shape["vision"]},
        qformer_config={**base.qformer_config.to_dict(), **shape["qformer"]},
        text_config={**base.text_config.to_dict(), **shape["text"]},
        num_query_tokens=shape["query_tokens"],
        image_token_index=base.image_token_index,
    )
    torch.manual_seed(0)
    target = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(target):  # random init straight on the GPU: seconds instead of minutes
        model = Blip2ForConditionalGeneration(config).to(torch.float16 if target == "cuda" else torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    Blip2Processor.from_pretrained(tiny).save_pretrained(folder)
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return folder


def load_and_caption(folder: Path, quantization: str) -> dict[str, object]:
    """Load through the lab's path in the given precision; GPU memory and one 20-token caption's time."""
    image = Image.open(ROOT / "assets" / "book" / "images" / "car.png")
    CACHE.clear()
    started = time.perf_counter()
    with models.vision_chat_model(BLIP2_ID, folder, quantization=quantization) as vc:
        load_s = time.perf_counter() - started
        memory_gb = torch.cuda.memory_allocated() / 1e9 if torch.cuda.is_available() else None
        vision_chat.caption(image, model=vc, max_new_tokens=4)  # warm-up
        seconds, text = timed(lambda: vision_chat.caption(image, model=vc, max_new_tokens=20), cuda_sync=True)
        return {
            "precision": vc.precision,
            "notes": list(vc.notes),
            "load_s": round(load_s, 1),
            "gpu_memory_GB": round(memory_gb, 2) if memory_gb is not None else None,
            "caption_s": round(seconds, 3),
            "caption_chars": len(text),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=["full", "small"], default="full")
    args = parser.parse_args()
    report: dict[str, object] = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    clip = clip_bench.measure(quick=args.scale == "small")
    report["clip"] = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in clip.items()}
    print(json.dumps({"clip": report["clip"]}, indent=2, default=str), flush=True)
    work = Path(tempfile.mkdtemp(prefix="lab-blip2-"))
    folder = write_blip2_shape(work / "blip2", FULL if args.scale == "full" else SMALL)
    speed = vision_chat_bench.measure(folder, repeats=2, new_tokens=30, device_name=None)
    speed.pop("memory_mb", None)
    report["blip2_16bit_speed"] = speed
    report["blip2_16bit"] = load_and_caption(folder, "none")
    print(
        json.dumps({k: report[k] for k in ("blip2_16bit_speed", "blip2_16bit")}, indent=2, default=str),
        flush=True,
    )
    try:
        import bitsandbytes  # noqa: F401

        report["blip2_4bit"] = (
            load_and_caption(folder, "4-bit") if torch.cuda.is_available() else "needs CUDA"
        )
    except ImportError:
        report["blip2_4bit"] = "bitsandbytes not installed"
    print(json.dumps({"blip2_4bit": report["blip2_4bit"]}, indent=2, default=str))


if __name__ == "__main__":
    main()
