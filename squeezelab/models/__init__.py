"""Models: one registry of SqueezeNet-family networks with the paper's layer names.

    from squeezelab.models import create_model, list_models
    model = create_model("squeezenet1_1", num_classes=200, sr=0.25, bypass="simple", stem="small")

Every model has ``forward_features`` / ``forward_head`` / ``reset_classifier`` (timm style) and a
``model_spec`` dict (name, num_classes, resolved options) from which ``create_model`` rebuilds it.
Registered: ``squeezenet1_0``, ``squeezenet1_1``, ``fire_next``, ``sq1`` (squeezenet.py's table) and
``alexnet``; ``get_model_entry(name).options`` lists each model's options and defaults.
"""

from squeezelab.models import alexnet as _alexnet  # noqa: F401  (registers its row)
from squeezelab.models import squeezenet as _squeezenet  # noqa: F401  (registers the table)
from squeezelab.models.design_space import FireSpec, fire_specs
from squeezelab.models.registry import ModelEntry, Opt, create_model, get_model_entry, list_models
from squeezelab.models.torchvision_compat import from_torchvision_state_dict, to_torchvision_state_dict

__all__ = [
    "FireSpec",
    "ModelEntry",
    "Opt",
    "create_model",
    "fire_specs",
    "from_torchvision_state_dict",
    "get_model_entry",
    "list_models",
    "to_torchvision_state_dict",
]
