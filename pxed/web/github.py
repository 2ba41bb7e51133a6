"""Sign-in with GitHub (OAuth web flow)."""

from __future__ import annotations


class GitHubRoutes:
    pass
