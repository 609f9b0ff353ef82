"""Hypothesis settings shared by the property tests."""
import os

from hypothesis import HealthCheck, settings

# Examples per exactness property; raise it (e.g. PCDIFF_EXAMPLES=1000) for a deeper local search.
EXAMPLES = int(os.environ.get("PCDIFF_EXAMPLES", 30))


def property_settings(max_examples: int, derandomize: bool = False) -> settings:
    """Settings for a property checked against brute force. A slow example says the machine is busy, not
    that the code is wrong: no deadline and no slowness health check."""
    return settings(max_examples=max_examples, deadline=None, derandomize=derandomize,
                    suppress_health_check=[HealthCheck.too_slow])


exact = property_settings(EXAMPLES)
