"""poschan: absolute-position information in the channel order of CNNs."""

__version__ = "0.1.0"
