"""A model without its weights: the config and tokenizer, and the model built on the meta device
(nothing read or allocated), for what needs only shapes: ``steer train --dry-run``'s parameter
counts and memory estimate.

The embedded model's config comes from its converted checkpoint, so the first use ever converts
the GGUF (~20 s, as any first use does); hub ids need the hub or the local Hugging Face cache for
their config and tokenizer only.
"""

from __future__ import annotations

import torch

from steer_cli.errors import SteerError
from steer_cli.models.names import EMBEDDED, TINY_FAMILIES


def load_skeleton(name: str, *, trust_remote_code: bool = False):
    """``(model, tokenizer)`` with the model on the meta device, in the config's own dtype."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from steer_cli.models import ensure_pad_token

    key = str(name).strip()
    lowered = key.lower()
    model_class = AutoModelForCausalLM.from_config
    if lowered == EMBEDDED:
        from steer_cli.models.embedded import converted, quiet_transformers

        with quiet_transformers():
            source = converted()
            config = AutoConfig.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
    elif lowered.startswith("tiny-") and lowered in TINY_FAMILIES:
        from steer_cli.models.tiny import tiny_parts

        tokenizer, config, model_class = tiny_parts(lowered)
    elif lowered.startswith("tiny-"):
        raise SteerError(
            f"Unknown tiny model {name!r}.", f"Valid tiny models: {', '.join(TINY_FAMILIES)}."
        )
    else:
        from steer_cli.models.hub import from_source

        def load(source: str, local_only: bool):
            remote = {"local_files_only": local_only, "trust_remote_code": trust_remote_code}
            return (
                AutoConfig.from_pretrained(source, **remote),
                AutoTokenizer.from_pretrained(source, **remote),
            )

        config, tokenizer = from_source(key, load)
    with torch.device("meta"):
        model = model_class(config)
    ensure_pad_token(model, tokenizer, name)
    return model.eval(), tokenizer
