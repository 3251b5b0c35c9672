"""Group mode's cross-partition rules: each instance's part, the sums, and judging them.

- :mod:`riskguard.aggregate.contributions`: an instance's part of each summed rule's
  value, read from its engine's state;
- :mod:`riskguard.aggregate.records`: the record each instance publishes to the
  aggregation topic, and which records add up to the whole input (one per partition);
- :mod:`riskguard.aggregate.judge`: judging the sums against the rules, as the kernel
  judges a value (latched escalation, alerts, warning levels, re-arming).

The Kafka side (publishing and following the topic) is
:mod:`riskguard.ingest.aggregation`; which rules are summed is
:mod:`riskguard.limits.scale`. docs/deployment.md, "Cross-partition rules".
"""
