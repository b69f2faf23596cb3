"""The CRD manifests, the one source of truth, shipped in the package as ``noti.crds`` data."""
