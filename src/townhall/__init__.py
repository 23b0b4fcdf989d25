"""townhall: live audio rooms that hold on the night that matters."""

__version__ = "0.1.0"
