"""One path for every adapter: a predict call becomes its telemetry."""
