"""Data-generating designs (docs/designs.md): the base and registry (`base`), the multisite family of
the paper's Designs 1-4 (`multisite`) and the plasmode family on a real trial's covariates
(`plasmode`) and its calibration to the trial's fitted outcome model (`calibrated`). `design.family` in a config chooses one; a plugin module registers more."""
from ..errors import ConfigError
from .base import (DESIGNS, OUTCOME, SITE, TREAT, TRUTH, DesignBase, Replicate, blame, check_replicate,
                   data_path, design_defaults, file_sha256, make_design, param, preset,
                   register_design, schema)
from .multisite import MAX_DRAWS, SITE_SIZES, Design
from .plasmode import Plasmode
from .calibrated import Calibrated

__all__ = ["ConfigError", "DESIGNS", "OUTCOME", "SITE", "TREAT", "TRUTH", "DesignBase",
           "Replicate", "blame", "check_replicate", "data_path", "design_defaults", "file_sha256",
           "make_design", "param", "preset", "register_design", "schema", "MAX_DRAWS", "SITE_SIZES", "Design", "Plasmode", "Calibrated"]
