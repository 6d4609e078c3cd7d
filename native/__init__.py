"""Hot paths in Cython, each beside a complete pure-Python twin with the same public API.

Import the implementations through :mod:`bmsbank.native.frames` and :mod:`bmsbank.native.limits`;
they load the compiled module unless ``BMSBANK_PURE=1`` forces the twins.
"""
