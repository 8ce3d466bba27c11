"""Models: the registry and every built-in (imported here, so `list_models()` is always complete)."""
from cnnmode.models.api import (MODELS, QAT_MODELS, build_model, captured, check_qat_supported, head_inputs,
                                head_module, list_models, param_count, resolve_stem)
from cnnmode.models import fastnet, resnet, simple, tv, vit  # noqa: F401  (fills the registry)

__all__ = ["MODELS", "QAT_MODELS", "build_model", "captured", "check_qat_supported", "head_inputs", "head_module",
           "list_models",
           "param_count", "resolve_stem"]
