"""Training: frozen snapshots of the labels (snapshots), runs from request to registered
version (runs), the watchdog for dead workers (watchdog), the promotion gate (gate) and the
default schedules (schedules)."""
