"""Shared test configuration."""

import os

from hypothesis import settings

pytest_plugins = ["pytester"]

# GRADCHECK_SLOW=1: property tests that follow the active profile run 500 examples each.
settings.register_profile("gradcheck-slow", max_examples=500, deadline=None)
if os.environ.get("GRADCHECK_SLOW") == "1":
    settings.load_profile("gradcheck-slow")
