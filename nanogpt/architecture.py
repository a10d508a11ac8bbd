"""A GPT's architecture: its sizes and options, with their defaults, stated once.

The model's own config (nanogpt.model.GPTConfig) and the `model` config group's schema
(nanogpt.config.ModelConfig) both extend `Architecture`. This module imports neither torch nor
Hydra, so that the command line can be checked against it before torch loads.

The options after the sizes are the changes that made modded-nanogpt's GPT-2 speedrun fastest
(nanogpt/model.py says what each does). Every default is GPT-2's, so a model is GPT-2 unless
an option says otherwise; only biases are off by default, as in nanoGPT's from-scratch configs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from nanogpt.settings import Choice, setting


class Gelu(Choice):
    none = "none"  # the exact GELU
    tanh = "tanh"  # the approximation GPT-2 was trained with


class Position(Choice):
    learned = "learned"  # GPT-2's table of position embeddings
    rope = "rope"  # rotary embeddings: queries and keys rotated by position, no table


class Norm(Choice):
    layernorm = "layernorm"
    rmsnorm = "rmsnorm"


class Activation(Choice):
    gelu = "gelu"
    relu2 = "relu2"  # ReLU squared


@dataclass
class Architecture:
    n_layer: int = setting(4, "transformer blocks")
    n_head: int = setting(4, "attention heads per block (n_embd must be divisible by it)")
    n_embd: int = setting(128, "width of the residual stream")
    dropout: float = setting(0.0, "dropout probability (training only)")
    bias: bool = setting(
        False,
        "biases in Linear and LayerNorm layers: GPT-2 has them; without them training is a bit faster and no worse, "
        "which is why nanoGPT's from-scratch configs turn them off",
    )
    gelu_approximate: Gelu = setting(Gelu.none, "the MLP's GELU: none = exact, tanh = GPT-2's (OpenAI's weights need it)")
    position: Position = setting(Position.learned, "learned (GPT-2's table) or rope (rotary embeddings)")
    rope_base: float = setting(10000.0, "position=rope: the base of the rotation frequencies")
    norm: Norm = setting(Norm.layernorm, "layernorm or rmsnorm")
    qk_norm: bool = setting(False, "RMS-normalise queries and keys per head")
    activation: Activation = setting(Activation.gelu, "the MLP's activation: gelu or relu2 (ReLU squared)")
    tie_embeddings: bool = setting(True, "false: the output head has its own matrix")
    zero_init_proj: bool = setting(False, "output projections (and an untied head) start at zero")


# The options that GPT-2's weights need as they are (OpenAI's, or any exported to the Hugging
# Face format): their defaults. bias and gelu_approximate come from the weights' config.json.
GPT2_OPTIONS = {
    field.name: field.default
    for field in dataclasses.fields(Architecture)
    if field.name in ("position", "norm", "qk_norm", "activation", "tie_embeddings")
}


def non_gpt2_options(architecture: Architecture) -> dict[str, object]:
    """The options of `architecture` that differ from GPT-2's (which GPT-2 weights cannot express)."""
    return {key: getattr(architecture, key) for key, value in GPT2_OPTIONS.items() if getattr(architecture, key) != value}
