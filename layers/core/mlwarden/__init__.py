"""ML Warden's shared core: settings, AWS clients, events, outcomes, alerts and the domain checks."""

__version__ = "0.1.0"
