"""Consuming the trading system's events from Kafka and driving the engine."""
