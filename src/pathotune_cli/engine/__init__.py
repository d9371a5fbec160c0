"""The PathoTune engine: prompted models, their prompts, text and instance encoders, the prompt file."""

from pathotune_cli.engine.build import BuiltModel, build_prompted_model, text_encoder_for
from pathotune_cli.engine.header import PromptHeader
from pathotune_cli.engine.load import load_prompted_model, prompt_header, random_weights_warning
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.engine.promptfile import PromptFile, read_prompt_file, save_prompt_file
from pathotune_cli.engine.text import encode_texts

__all__ = [
    "BuiltModel",
    "PromptFile",
    "PromptHeader",
    "PromptedModel",
    "build_prompted_model",
    "encode_texts",
    "load_prompted_model",
    "prompt_header",
    "random_weights_warning",
    "read_prompt_file",
    "save_prompt_file",
    "text_encoder_for",
]
