"""What the services share: service wiring, stream and bucket setup, dead letters, metrics, invoking a routine."""
