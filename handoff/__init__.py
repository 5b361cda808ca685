"""The `handoff` command line: composes cluster, training, serving and monitoring."""
