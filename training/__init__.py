"""Training side of edge_anytime (torch): data, anytime model zoo, trainer, exporter."""
