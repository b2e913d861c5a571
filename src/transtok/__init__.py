"""transtok: give a pretrained causal language model a new language, cheaply."""
from __future__ import annotations

__version__ = "0.1.0"
