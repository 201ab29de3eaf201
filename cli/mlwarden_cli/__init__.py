"""Developer tools for ML Warden: `mlwarden replay` and `mlwarden demo`. Never shipped to Lambda."""
