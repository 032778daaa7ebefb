from .data_manager import DataManager, DatasetWrapper  # noqa: F401
from .datasets import DATASET_REGISTRY, Datum, DatasetBase, build_dataset  # noqa: F401
