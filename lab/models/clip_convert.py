"""Convert a transformers ``CLIPModel`` (config and weights) into open_clip's ``CLIP``: same maths."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _open_clip_cfg_from_transformers(folder: Path) -> dict[str, Any]:
    """open_clip's ``model_cfg`` for a transformers ``CLIPModel`` folder (full values, defaults filled in)."""
    from transformers import CLIPConfig

    config = CLIPConfig.from_pretrained(folder)
    text, vision = config.text_config, config.vision_config
    return {
        "embed_dim": config.projection_dim,
        "quick_gelu": text.hidden_act == "quick_gelu",
        "vision_cfg": {
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "width": vision.hidden_size,
            "layers": vision.num_hidden_layers,
            "head_width": vision.hidden_size // vision.num_attention_heads,
            "mlp_ratio": vision.intermediate_size / vision.hidden_size,
        },
        "text_cfg": {
            "context_length": text.max_position_embeddings,
            "vocab_size": text.vocab_size,
            "width": text.hidden_size,
            "heads": text.num_attention_heads,
            "layers": text.num_hidden_layers,
            "mlp_ratio": text.intermediate_size / text.hidden_size,
        },
    }


def _open_clip_state_from_transformers(hf: dict[str, Any], model_cfg: dict[str, Any]) -> dict[str, Any]:
    """Rename a transformers ``CLIPModel`` state dict into open_clip's ``CLIP`` (same weights, same maths).

    transformers keeps separate q/k/v projections where open_clip's ``nn.MultiheadAttention`` holds one
    ``in_proj``; projections are ``Linear`` weights there and plain matrices (transposed) here.
    """
    import torch

    out = {
        "logit_scale": hf["logit_scale"],
        "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        "text_projection": hf["text_projection.weight"].T.contiguous(),
        "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
        "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
        "visual.proj": hf["visual_projection.weight"].T.contiguous(),
    }
    norms = {
        "ln_final": "text_model.final_layer_norm",
        "visual.ln_pre": "vision_model.pre_layrnorm",
        "visual.ln_post": "vision_model.post_layernorm",
    }
    blocks = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj"}
    blocks |= {"mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    towers = [("", "text_model", model_cfg["text_cfg"]), ("visual.", "vision_model", model_cfg["vision_cfg"])]
    for ours, theirs, tower in towers:
        for i in range(tower["layers"]):
            norms |= {
                f"{ours}transformer.resblocks.{i}.{a}": f"{theirs}.encoder.layers.{i}.{b}"
                for a, b in blocks.items()
            }
            for p in ("weight", "bias"):
                qkv = [hf[f"{theirs}.encoder.layers.{i}.self_attn.{n}_proj.{p}"] for n in "qkv"]
                out[f"{ours}transformer.resblocks.{i}.attn.in_proj_{p}"] = torch.cat(qkv)
    for ours, theirs in norms.items():
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = hf[f"{theirs}.{p}"]
    return out
