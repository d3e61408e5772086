"""Registry of estimators; importing this package registers the built-in methods."""
from .registry import FAMILIES, REGISTRY, Method, available, load_plugins, make, register
from . import reference, qlearning, weighting, policytree, ml  # noqa: F401  (registration)
from .rmethod import register_r

__all__ = ["FAMILIES", "REGISTRY", "Method", "available", "load_plugins", "make", "register",
           "register_r"]
