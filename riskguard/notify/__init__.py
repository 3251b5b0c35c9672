"""Alert sinks (PagerDuty, Slack, Alertmanager, generic webhook), off the hot path."""
