"""Live run streams: Server-Sent Events of a run's events, shared per run by one Redis reader."""
