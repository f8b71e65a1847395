from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Property-based tests: bounded so that the whole suite stays fast; HYPOTHESIS_PROFILE=thorough digs deeper.
settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
