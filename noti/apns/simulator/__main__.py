"""``python -m noti.apns.simulator``: the same as ``noti apns-sim``."""

from noti.apns.simulator.cli import main

main()
