"""How our GPT maps onto transformers' GPT-2: the module names are the same, four matrices are
stored transposed, and the GELU has GPT-2's names."""

from __future__ import annotations

from nanogpt.architecture import Gelu

# The matrices GPT-2 stores in its Conv1D layout, (in, out), where nn.Linear holds (out, in).
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# Our GELU -> config.json's activation_function, as an export writes it.
ACTIVATION_FUNCTIONS = {Gelu.tanh: "gelu_new", Gelu.none: "gelu"}
# config.json's activation_function -> our GELU, as a folder is read: transformers also writes
# gelu_pytorch_tanh, another implementation of the tanh approximation.
GELUS = {**{name: gelu for gelu, name in ACTIVATION_FUNCTIONS.items()}, "gelu_pytorch_tanh": Gelu.tanh}
