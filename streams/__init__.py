"""Everything that moves data: replay, the CLI, (later) Kafka, sinks, metrics."""
