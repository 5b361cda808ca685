"""Serving: versioned Ray Serve deployments from the registry with traffic splitting (issue 3)."""
