"""The `handoff` command line, which composes cluster, training, serving and monitoring (cli.py lists
its commands, one module per group), and what it alone may compose: the closed loop's port
(loop_port.py), the demo, and the specs of the Ray jobs that run its commands (jobs.py)."""
