"""Hugging Face ``transformers`` models (LLaDA, Dream, BERT-style MLMs) behind the Backbone contract.

``transformers`` is imported only inside this module's functions, so pcdiff works without it.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..arguments import check_flag, check_int
from .diffusion_gemma import DiffusionGemmaBackbone, is_diffusion_gemma_config
from .protocol import Backbone, BackboneOutput

__all__ = ["HFBackbone", "load_hf_backbone"]


def _import_transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError("Hugging Face backbones need the 'transformers' package: pip install "
                          "'pcdiff[hf]'") from err
    return transformers


def _config_int(config, names: tuple[str, ...]) -> int | None:
    """First of ``names`` set on the (text) config; models disagree on what to call sizes."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in names:
        value = getattr(text_config, name, None)
        if isinstance(value, int):
            return value
    return None


def _shift_right(x: torch.Tensor) -> torch.Tensor:
    """[B, L, ...] -> [B, L, ...] with out[:, i] = x[:, i-1] and out[:, 0] = x[:, 0]."""
    return torch.cat([x[:, :1], x[:, :-1]], dim=1)


class HFBackbone(Backbone):
    """Wraps a ``transformers`` model whose output has ``.logits`` and ``.hidden_states``.

    ``shift_logits=True`` is Dream's convention: the model's logits at position i predict token
    i+1, so they are moved one step right (position 0 keeps its own). The hidden states move with
    them, so ``hidden[:, i]`` is always the feature the logits for position i came from.
    Outputs are float32 whatever the model's dtype, because circuits work in log space.
    """

    def __init__(self, model: nn.Module, mask_id: int, shift_logits: bool = False):
        super().__init__()
        self.model = model
        self.shift_logits = shift_logits
        config = model.config
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        # the head's width is the truth: several models pad vocab_size in the config differently
        vocab_size = head.weight.shape[0] if head is not None else _config_int(config, ("vocab_size",))
        hidden_size = _config_int(config, ("hidden_size", "d_model", "n_embd", "dim"))
        if vocab_size is None or hidden_size is None:
            raise ValueError(f"cannot read vocab_size / hidden_size from {type(config).__name__}")
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        num_inputs = embedding.num_embeddings if embedding is not None else vocab_size
        check_int("mask_id (an id of the model's input embeddings)", mask_id, 0, num_inputs - 1)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.mask_id = mask_id

    def compute(self, tokens: torch.Tensor) -> BackboneOutput:
        out = self.model(input_ids=tokens, output_hidden_states=True)
        logits = getattr(out, "logits", None)
        hidden_states = getattr(out, "hidden_states", None)
        if logits is None or not hidden_states:
            raise RuntimeError(f"{type(self.model).__name__} returned no logits or no hidden_states; "
                               "it needs a language-modelling head")
        hidden = hidden_states[-1]  # [B, L, D]
        if logits.shape[-1] != self.vocab_size:
            raise RuntimeError(f"model produced {logits.shape[-1]} logits per position, expected "
                               f"vocab_size {self.vocab_size}")
        if self.shift_logits:
            logits, hidden = _shift_right(logits), _shift_right(hidden)
        return BackboneOutput(logits=logits.float(), hidden=hidden.float())


def _auto_class(transformers, config, trust_remote_code: bool):
    """Prefer a masked-LM head, then a causal-LM head, then the bare model (remote code)."""
    names = ("AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoModel")
    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code and auto_map:
        for name in names:
            if name in auto_map:
                return getattr(transformers, name)
    mappings = (transformers.MODEL_FOR_MASKED_LM_MAPPING, transformers.MODEL_FOR_CAUSAL_LM_MAPPING)
    for name, mapping in zip(names, mappings):
        if type(config) in mapping:
            return getattr(transformers, name)
    raise ValueError(f"{type(config).__name__} has no masked-LM or causal-LM head in transformers; "
                     "wrap the model yourself with HFBackbone")


def _find_mask_id(transformers, name_or_path: str, config, trust_remote_code: bool) -> int:
    mask_id = getattr(config, "mask_token_id", None)
    if isinstance(mask_id, int):
        return mask_id
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"{name_or_path}: no mask_token_id in the config and no tokenizer to ask "
                         f"({type(err).__name__}); pass mask_id") from None
    if tokenizer.mask_token_id is None:
        raise ValueError(f"{name_or_path}: the tokenizer has no mask token; pass mask_id")
    # with no vocabulary files transformers builds a near-empty tokenizer whose [MASK] id is
    # meaningless; a real tokenizer covers most of the model's (possibly padded) vocabulary
    model_vocab = _config_int(config, ("vocab_size",)) or 0
    if len(tokenizer) < model_vocab // 2:
        raise ValueError(f"{name_or_path}: the tokenizer has {len(tokenizer)} tokens for a model with "
                         f"{model_vocab}, so its mask id cannot be trusted; pass mask_id")
    return int(tokenizer.mask_token_id)


def _check_load_arguments(name_or_path, mask_id, shift_logits, dtype, trust_remote_code, device) -> None:
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ValueError(f"name_or_path must be a hub name or a local folder, got {name_or_path!r}")
    check_int("mask_id", mask_id, 0, optional=True)
    # trust_remote_code runs the model repository's code: only a real True may turn it on
    check_flag("shift_logits", shift_logits)
    check_flag("trust_remote_code", trust_remote_code)
    if not isinstance(dtype, torch.dtype) and not (isinstance(dtype, str) and (
            dtype == "auto" or isinstance(getattr(torch, dtype, None), torch.dtype))):
        raise ValueError(f"dtype must be a torch.dtype, its name or 'auto', got {dtype!r}")
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"device must be None or a torch device (e.g. 'cuda'), got {device!r}") from None


def load_hf_backbone(
    name_or_path: str,
    mask_id: int | None = None,
    shift_logits: bool = False,
    dtype: torch.dtype | str = torch.float32,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
) -> HFBackbone | DiffusionGemmaBackbone:
    """Load a pretrained model (hub name or local directory) as a frozen, eval-mode HFBackbone.

    Examples: ``("GSAI-ML/LLaDA-8B-Instruct", trust_remote_code=True)``;
    ``("Dream-org/Dream-v0-Instruct-7B", shift_logits=True, trust_remote_code=True)``.
    ``mask_id=None`` reads ``mask_token_id`` from the config, else from the tokenizer. The arguments
    are checked before anything is imported or downloaded.

    A DiffusionGemma config (``model_type`` "diffusion_gemma") loads ``DiffusionGemmaForBlockDiffusion`` as a
    :class:`DiffusionGemmaBackbone` (uniform noise: no mask id, no shift).
    """
    _check_load_arguments(name_or_path, mask_id, shift_logits, dtype, trust_remote_code, device)
    transformers = _import_transformers()
    config = transformers.AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if is_diffusion_gemma_config(config):
        if mask_id is not None or shift_logits:
            raise ValueError(f"{name_or_path} is DiffusionGemma, a uniform-noise model: it has no mask id and no "
                             f"logit shift (got mask_id={mask_id!r}, shift_logits={shift_logits!r})")
        model = transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(name_or_path, config=config, dtype=dtype)
        model = model if device is None else model.to(device)
        return DiffusionGemmaBackbone(model.eval().requires_grad_(False))
    auto = _auto_class(transformers, config, trust_remote_code)
    if mask_id is None:
        mask_id = _find_mask_id(transformers, name_or_path, config, trust_remote_code)
    model = auto.from_pretrained(name_or_path, config=config, dtype=dtype, trust_remote_code=trust_remote_code)
    if device is not None:
        model = model.to(device)
    model.eval().requires_grad_(False)
    return HFBackbone(model, mask_id=mask_id, shift_logits=shift_logits)
