"""finetune: datasets, LLaMA-Factory configs, memory estimates, templates and Modelfiles."""

from finetune.convert import ConversionResult, convert_file, convert_samples
from finetune.datasets import ValidationReport, validate_dataset, write_clean
from finetune.deepspeed import deepspeed_config
from finetune.errors import (
    ConfigError,
    ConversionError,
    DatasetError,
    FinetuneError,
    TokenizerError,
)
from finetune.llamafactory import load_dataset_info, register_dataset
from finetune.memory import kv_capacity_tokens, serving_estimate, suggest, training_estimate
from finetune.modelfile import modelfile_text, write_modelfile
from finetune.samples import Issue, Message, Role, Sample, Severity
from finetune.shapes import PRESETS, ModelShape, resolve_shape, shape_from_hf_config
from finetune.spec import DatasetSpec, detect_spec
from finetune.templates import FAMILIES, ChatTemplate, guess_family, template_for
from finetune.tokenstats import load_tokenizer
from finetune.trainconfig import Launch, TrainConfig, training_yaml, write_training_config

__all__ = [
    "FAMILIES",
    "PRESETS",
    "ChatTemplate",
    "ConfigError",
    "ConversionError",
    "ConversionResult",
    "DatasetError",
    "DatasetSpec",
    "FinetuneError",
    "Issue",
    "Launch",
    "Message",
    "ModelShape",
    "Role",
    "Sample",
    "Severity",
    "TokenizerError",
    "TrainConfig",
    "ValidationReport",
    "convert_file",
    "convert_samples",
    "deepspeed_config",
    "detect_spec",
    "guess_family",
    "kv_capacity_tokens",
    "load_dataset_info",
    "load_tokenizer",
    "modelfile_text",
    "register_dataset",
    "resolve_shape",
    "serving_estimate",
    "shape_from_hf_config",
    "suggest",
    "template_for",
    "training_estimate",
    "training_yaml",
    "validate_dataset",
    "write_clean",
    "write_modelfile",
    "write_training_config",
]
