"""simstudy: simulation studies of optimal treatment regimes from multisite randomized trials."""
from .designs import Design, Replicate
from .errors import ConfigError
from .methods import Method, available, make, register, register_r
from .api import Study, load, run_study

__version__ = "0.1.0"
__all__ = ["ConfigError", "Design", "Replicate", "Method", "available", "make", "register", "register_r",
           "run_study", "load", "Study"]
