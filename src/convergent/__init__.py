"""convergent: do networks trained from different seeds learn the same representations?

The library behind the pipeline; every module works on plain numpy arrays, torch modules and
file paths, so it can be used on activations from anywhere.
"""

__version__ = "0.1.0"
