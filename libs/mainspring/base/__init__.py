"""Pure building blocks every layer uses: settings, tracing, units, schedules, KV helpers, log format, health."""
