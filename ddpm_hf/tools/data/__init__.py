"""Training and evaluation data: the images (`loading`), decoded (`decoding`) into memory, a decoded store
(`store`) or on demand (`lazy`), and the batches of each step (`batches`)."""

from .batches import StepSampler, micro_batches, random_flip, step_generator
from .lazy import LazyImages
from .loading import (
    DATA_MODES,
    DIGITS_ID,
    DIGITS_SOURCE,
    DataArguments,
    ImageData,
    Images,
    choose_data_mode,
    folder_label,
    load_image_data,
)

__all__ = [
    "DATA_MODES",
    "DIGITS_ID",
    "DIGITS_SOURCE",
    "DataArguments",
    "ImageData",
    "Images",
    "LazyImages",
    "StepSampler",
    "choose_data_mode",
    "folder_label",
    "load_image_data",
    "micro_batches",
    "random_flip",
    "step_generator",
]
