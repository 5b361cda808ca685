"""Every kind of event a model's event log holds (pure: no imports, so the CLI's help can list them).

The monitor's (monitoring/core.py, monitoring/state_store.py), the accepted environment differences
of `handoff serve --allow-env-drift` (handoff/serve_commands.py), and the closed loop's
(monitoring/loop.py, monitoring/loop_runner.py); tests/unit/test_cli_refusals.py holds this list to
what those recorders write.
"""

MONITOR_EVENT_KINDS = ("window_scored", "drift_declared", "concept_drift_suspected", "window_labels",
                       "window_unprofiled", "file_skipped", "feedback_skipped", "files_compacted", "compaction_failed",
                       "event_log_repaired", "env_drift_accepted")
LOOP_EVENT_KINDS = ("retrain_submitted", "retrain_finished", "retrain_failed", "retrain_retry_scheduled",
                    "retrain_abandoned", "retrain_deferred", "gate_passed", "gate_failed", "canary_started",
                    "canary_ready", "promoted", "rolled_back")
EVENT_KINDS = MONITOR_EVENT_KINDS + LOOP_EVENT_KINDS
