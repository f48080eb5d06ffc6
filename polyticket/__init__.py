"""polyticket: lottery-ticket sub-networks of multilingual transformers."""

__version__ = "0.4.8"
