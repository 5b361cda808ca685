"""Every test process: Ray never starts itself behind a test's back.

Ray starts a local instance on the first Ray call made before `ray.init` (its auto-init hook). In
a test process that is a hazard, not a convenience: Serve's handles poll the controller from a
thread that outlives `ray.shutdown` (their shared long-poll client is never stopped), and a poll
answered after a module's Ray went down started a fresh Ray with a dashboard in the pytest process;
the next module's `ray.init` then failed ("called ray.init twice") and so did all its tests.
Handoff's own code always connects explicitly (`cluster.connect`), so with auto-init off a stray
call fails where it is made instead of starting a cluster. Ray reads the switch when it is first
imported, hence here, in the root conftest, before any test module imports Ray.
"""

import os

os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
