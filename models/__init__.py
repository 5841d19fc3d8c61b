"""Velocity models for timeprobe.

* SEG/EAGE Overthrust 2D (:func:`load_overthrust`, :func:`overthrust_pair`): found
  locally (``search``, ``$TIMEPROBE_DATA``, ``shared/models`` beside the checkout,
  the cache) or downloaded from the public SLIM server; see :mod:`models.overthrust`.
* :func:`synthetic_thrust`: a built-in SYNTHETIC thrust/layered model (not
  Overthrust) that needs no file, the offline default for examples and tests;
  :func:`synthetic_thrust_3d` its 3D counterpart (curved fault, plunging fold,
  a channel and a gas pocket), any grid size.
* :func:`initial_model`: smooth starting model (2D or 3D), smoothing only below the water.
* :func:`example_models`: the Overthrust pair when its file is at hand, else the
  synthetic stand-in with a warning (for examples that must also run offline).
"""
from .overthrust import (OVERTHRUST_FILES, OVERTHRUST_URLS, SMALL_WINDOW, default_cache_dir,
                         find_overthrust, load_overthrust, overthrust_pair, verify_overthrust_file)
from .synthetic import (SYNTHETIC_LAYER_VELOCITIES, detect_water_rows, initial_model, synthetic_thrust,
                        synthetic_thrust_3d)
from .examples import example_models

__all__ = ["load_overthrust", "overthrust_pair", "find_overthrust", "verify_overthrust_file",
           "default_cache_dir", "OVERTHRUST_FILES", "OVERTHRUST_URLS", "SMALL_WINDOW",
           "synthetic_thrust", "synthetic_thrust_3d", "initial_model", "detect_water_rows", "SYNTHETIC_LAYER_VELOCITIES",
           "example_models"]
