"""Live-model analysis and fixes. Everything here imports torch."""
