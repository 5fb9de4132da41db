"""Errors raised by finetune.

FinetuneError
 ├── DatasetError        a file or dataset_info entry cannot be read or understood
 ├── ConversionError     a sample cannot be expressed in the target format
 ├── TokenizerError      a tokenizer path cannot be loaded
 └── ConfigError         a training, estimate or export setting is invalid
"""


class FinetuneError(Exception):
    """Base class for everything finetune raises on purpose."""


class DatasetError(FinetuneError):
    pass


class ConversionError(FinetuneError):
    pass


class TokenizerError(FinetuneError):
    pass


class ConfigError(FinetuneError):
    pass
