"""Dockerfile -> root filesystem -> bootable disk image, without root."""
