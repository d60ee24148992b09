"""The product's verbs, built from ``atelier.art`` and ``atelier.store``."""
