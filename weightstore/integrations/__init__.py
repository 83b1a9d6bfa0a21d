"""Training-loop integrations, each importing its framework only when imported itself:
``weightstore.integrations.transformers`` (a Trainer callback)."""
