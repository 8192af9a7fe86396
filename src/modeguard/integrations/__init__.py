"""Integrations with frameworks: import each module only where its framework is installed."""
