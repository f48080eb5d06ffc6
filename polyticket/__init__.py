"""polyticket: lottery-ticket sub-networks of multilingual transformers."""

__version__ = "0.2.0"
