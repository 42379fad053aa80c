"""The Faust worker: the app, its relay timers and consumer agents, maintenance, metrics."""
