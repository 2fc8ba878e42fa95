"""The on-device agent: model store, runtimes, dynamic batching, OIP v2 API, telemetry."""
