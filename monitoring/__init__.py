"""Monitoring: live-data sink, drift statistics and retraining decisions (a later issue)."""
