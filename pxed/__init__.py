"""pxed: a bare-metal provisioning control server on Twisted."""

__version__ = "0.1.0"
