"""The Kafka runtime: the validator, the stages, the sinks, alerts, topics,
settings, metrics, and the replay runner that runs the same engine over a file."""
