"""polyticket: lottery-ticket sub-networks of multilingual transformers."""

__version__ = "0.1.0"
