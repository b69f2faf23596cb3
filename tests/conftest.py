"""Test-session services: each fixture module starts real servers from local binaries."""

pytest_plugins = [
    "harness.services",
    "harness.k8s",
    "harness.apns",
    "harness.pushy",
    "harness.gateway",
    "harness.sender",
]
