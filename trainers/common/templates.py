"""Prompt templates: CoOp's per-dataset zero-shot templates and the ImageNet ensembles."""
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

__all__ = ["CUSTOM_TEMPLATES", "IMAGENET_TEMPLATES", "IMAGENET_TEMPLATES_SELECT", "class_prompts", "template_for"]

DEFAULT_TEMPLATE = "a photo of a {}."

CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}

# open_clip ships OpenAI's two ImageNet lists (as callables) in the same order as CoOp's.
IMAGENET_TEMPLATES = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]  # 80 templates
IMAGENET_TEMPLATES_SELECT = [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]  # 7 templates


def class_prompts(template, classnames):
    """One prompt per class; underscores in class names become spaces."""
    return [template.format(name.replace("_", " ")) for name in classnames]


def template_for(dataset_name):
    """CoOp's template of a dataset; datasets outside the table get ``a photo of a {}.`` (with a note)."""
    if dataset_name not in CUSTOM_TEMPLATES:
        print(f'Note: no prompt template for dataset "{dataset_name}"; using "{DEFAULT_TEMPLATE}"')
        return DEFAULT_TEMPLATE
    return CUSTOM_TEMPLATES[dataset_name]
