"""What a fine-tune needs to know about a model before loading its weights, read from its config alone.

:func:`model_facts` builds the model on PyTorch's meta device (shapes, no memory) to list its linear
layers (the LoRA targets) and count parameters; :func:`check_against_model` refuses a config that asks
for layers the model lacks or more positions than it has.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from lab import catalog, models
from lab.errors import InputError
from lab.finetune.config import FineTuneConfig, model_and_path


class NotCausalLM(InputError):
    """The base model is not a decoder that predicts the next token."""


@dataclass(frozen=True)
class LinearLayer:
    """One kind of linear layer (by its last name part, e.g. ``q_proj``): how many, the first one's shape,
    and in + out summed over all of them (GPT-2's ``c_proj`` has two shapes)."""

    name: str
    count: int
    in_features: int
    out_features: int
    fan_total: int


@dataclass(frozen=True)
class ModelFacts:
    """What a fine-tune needs to know about a model before loading its weights."""

    model_id: str
    model_type: str
    parameters: int
    linear_parameters: int  # in the linear layers of the blocks: what 4-bit quantises
    linear_layers: tuple[LinearLayer, ...]
    layers: int
    hidden_size: int
    vocab_size: int
    max_positions: int | None

    @property
    def target_choices(self) -> list[str]:
        return [layer.name for layer in self.linear_layers]

    def lora_parameters(self, r: int, targets: tuple[str, ...] | list[str]) -> int:
        """Trainable parameters of a LoRA adapter: r × (in + out) for each adapted linear layer."""
        chosen = set(targets)
        return sum(r * layer.fan_total for layer in self.linear_layers if layer.name in chosen)


def _is_causal(model_config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if getattr(model_config, "is_encoder_decoder", False):
        return False
    if model_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return False
    # BERT has a causal-LM class too, but an encoder checkpoint (BertModel, BertForMaskedLM) is not one.
    architectures = getattr(model_config, "architectures", None) or []
    return not architectures or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)


@functools.lru_cache(maxsize=32)
def model_facts(base_model: str) -> ModelFacts:
    """Parameters and linear layers of a causal LM, from its config on PyTorch's meta device.

    Raises:
        NotCausalLM: an encoder, a sentence encoder, an encoder-decoder or a vision model.
        ModelUnavailable: the model is not here (the message says how to get it).
    """
    import torch

    model_id, path = model_and_path(base_model)
    entry = catalog.entry(model_id)
    hint = "choose a decoder such as SmolLM2 or TinyLlama"
    if catalog.is_known(model_id) and entry.kind not in ("causal-lm",):
        raise NotCausalLM(
            f"{entry.title} ({model_id}) is a {entry.kind}, not a causal language model: {hint}."
        )
    model_config = models.model_config(model_id, path)
    if not _is_causal(model_config):
        kind = "/".join(getattr(model_config, "architectures", None) or [model_config.model_type])
        raise NotCausalLM(f"{model_id} is a {kind} model, not a causal language model: {hint}.")
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only: no memory, no weights
        network = AutoModelForCausalLM.from_config(model_config)
    from transformers.pytorch_utils import Conv1D

    output = network.get_output_embeddings()
    layers: dict[str, list[int]] = {}
    linear_total = 0
    for name, module in network.named_modules():
        if module is output:  # the LM head: peft leaves it alone, as does the book
            continue
        if isinstance(module, torch.nn.Linear):
            shape = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):  # GPT-2's linear layers, weight stored (in, out)
            shape = tuple(module.weight.shape)
        else:
            continue
        short = name.rsplit(".", 1)[-1]
        count, fan_in, fan_out, fan_total = layers.get(short, [0, *shape, 0])
        layers[short] = [count + 1, fan_in, fan_out, fan_total + sum(shape)]
        linear_total += module.weight.numel()
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    return ModelFacts(
        model_id=model_id,
        model_type=model_config.model_type,
        parameters=sum(p.numel() for p in network.parameters()),
        linear_parameters=linear_total,
        linear_layers=tuple(LinearLayer(n, *values) for n, values in layers.items()),
        layers=int(getattr(text_config, "num_hidden_layers", 0) or 0),
        hidden_size=int(getattr(text_config, "hidden_size", 0) or 0),
        vocab_size=int(getattr(text_config, "vocab_size", 0) or 0),
        max_positions=getattr(text_config, "max_position_embeddings", None),
    )


def check_against_model(config: FineTuneConfig, facts: ModelFacts) -> None:
    """Refuse target modules the model lacks and lengths beyond its positions."""
    unknown = [m for m in config.target_modules if m not in facts.target_choices]
    if unknown:
        raise InputError(
            f"{facts.model_id} has no linear layer named {', '.join(unknown)}; "
            f"its linear layers are {', '.join(facts.target_choices)}."
        )
    if facts.max_positions and config.max_seq_length > facts.max_positions:
        raise InputError(
            f"Max sequence length {config.max_seq_length} is beyond {facts.model_id}'s "
            f"{facts.max_positions} positions."
        )
