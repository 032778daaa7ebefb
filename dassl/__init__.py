"""A from-scratch engine exposing the Dassl.pytorch API used by CoOp-family trainers."""

__version__ = "0.6.3"
