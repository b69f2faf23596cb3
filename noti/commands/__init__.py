"""The commands of the core that belong to no component: campaign, devices, send (each component keeps
its own in its cli module: gateway, sender, operator, store, the APNs simulator, dev)."""
