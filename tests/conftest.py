"""Test-session services: each fixture module starts real servers from local binaries."""

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "harness.services",
    "harness.k8s",
    "harness.apns",
    "harness.pushy",
    "harness.gateway",
    "harness.sender",
]

# Examples are judged by what they find, not by how fast this machine draws them: on a shared
# 2-core CI box a draw can take seconds, which is no defect of the code under test.
settings.register_profile("noti", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("noti")
